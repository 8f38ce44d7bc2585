"""What ``petalnet inspect`` reports: per-split counts and classes, full verification, sample grids."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from petalnet.classes import class_name
from petalnet.commands import InspectOptions
from petalnet.data.dataset import TFRecordImages
from petalnet.data.discovery import DataSource
from petalnet.data.mirror import local_copies, named
from petalnet.errors import DataError, PetalnetError
from petalnet.options import augment_spec


def open_splits(src: DataSource, **kwargs) -> dict[str, TFRecordImages]:
    """Each split's dataset; remote files are read once, in order, into local copies (``mirror``)."""
    return {name: TFRecordImages(local_copies(paths), image_size=src.image_size, **kwargs)
            for name, paths in src.splits.items()}


def summarize(src: DataSource, datasets: dict[str, TFRecordImages]) -> dict:
    """``{"image_size": S, "splits": {name: {"images", "labeled", "files", "classes"}}}``.

    The image size declared by folder or file names is checked against each split's first image;
    with no declared size, the first image gives it.
    """
    size = src.image_size
    splits = {}
    for name, ds in datasets.items():
        if len(ds):
            img, _ = ds.load(0)   # raises if it disagrees with the declared size
            if size is None:
                size = ds.image_size = img.shape[-1]
        labels, _ = ds.metadata()
        entry = {"images": len(ds), "labeled": ds.labeled, "files": len(ds.paths)}
        if labels is not None:
            bad = [int(v) for v in set(labels.tolist()) if not 0 <= v < 104]
            if bad:
                raise PetalnetError(f"{src.root}: split {name} has class indices outside 0..103: {bad[:5]}")
            entry["classes"] = {str(k): v for k, v in sorted(Counter(labels.tolist()).items())}
        splits[name] = entry
    return {"image_size": size, "splits": splits}


def format_summary(root: str, summary: dict) -> str:
    lines = [f"{root}: image size {summary['image_size']}"]
    for name, s in summary["splits"].items():
        lines.append(f"  {name}: {s['images']} images in {s['files']} files, "
                     + ("labelled" if s["labeled"] else "unlabelled"))
        for idx, n in s.get("classes", {}).items():
            lines.append(f"    {int(idx):>3} {class_name(int(idx)):<28} {n:>6}")
    return "\n".join(lines)


def verify(datasets: dict[str, TFRecordImages], *, skip_bad: bool, progress=None) -> list[str]:
    """Read, checksum and decode every record. Raises on the first problem, or lists them all with skip_bad."""
    problems = [p for ds in datasets.values() for p in ds.problems]

    def check(args):
        ds, i = args
        try:
            ds.load(i)
        except DataError as e:
            if not skip_bad:
                raise
            return str(e)
        return None

    jobs = [(ds, i) for ds in datasets.values() for i in range(len(ds))]
    with ThreadPoolExecutor(2) as pool:   # decoding releases the GIL
        results = pool.map(check, jobs)
        if progress:
            results = progress(results, total=len(jobs), desc="verify", unit="img")
        problems += [r for r in results if r]
    return problems


def sample_grid(ds: TFRecordImages, path: str, n: int = 24, title: str | None = None) -> str:
    from petalnet.plots import image_grid
    step = max(1, len(ds) // n)
    picks = list(range(0, len(ds), step))[:n]
    images, titles = [], []
    for i in picks:
        img, feats = ds.load(i)
        images.append(img)
        titles.append(class_name(feats[ds.label_key]) if ds.labeled else feats[ds.id_key].decode(errors="replace"))
    return image_grid(images, titles, path, suptitle=title)


def parse_augment(spec: str):
    """'affine=1,color=0.2' -> AugmentConfig; OptionError for unknown names or values train refuses."""
    from petalnet.augment import AugmentConfig
    return AugmentConfig(**augment_spec(spec))


def augment_grid(ds: TFRecordImages, path: str, aug, n: int = 6, copies: int = 3, seed: int = 0,
                 title: str | None = None) -> str:
    """Each of ``n`` images beside ``copies`` augmented versions, as training would draw them."""
    import torch

    from petalnet.accel import DevicePreprocess
    from petalnet.augment import flip_mask, mixer, no_mixing, step_generator
    from petalnet.plots import image_grid
    step = max(1, len(ds) // n)
    picks = list(range(0, len(ds), step))[:n]
    loaded = [ds.load(i) for i in picks]
    images = torch.stack([img for img, _ in loaded])
    size = images.shape[-1]
    prep = DevicePreprocess(torch.device("cpu"), (0.0,) * 3, (1 / 255,) * 3, size, channels_last=False)
    mix = mixer(aug, 104, 0.0) or no_mixing
    views = []
    for copy in range(copies):
        x = prep(images, flip_mask(torch.tensor(picks), copy, seed), aug, step_generator(torch.device("cpu"), seed, copy, 0))
        x, _ = mix(x, torch.zeros(len(x), dtype=torch.long))
        views.append(x.clamp(0, 255).round().to(torch.uint8))
    grid, titles = [], []
    for k, (img, feats) in enumerate(loaded):
        name = class_name(feats[ds.label_key]) if ds.labeled else feats[ds.id_key].decode(errors="replace")
        grid += [img] + [v[k] for v in views]
        titles += [name] + [f"augmented {c + 1}" for c in range(copies)]
    return image_grid(grid, titles, path, ncols=copies + 1, suptitle=title)


def inspect(data, *, image_size: int | None = None, verify_all: bool = False, grid: str | None = None,
            augment: str | None = None, as_json: bool = False, skip_bad: bool = False, progress=None,
            **keys) -> tuple[str, bool]:
    """``petalnet inspect``: (the report, as text or JSON; whether verification found problems).
    ``keys``: image_key, label_key, id_key. Every option is checked (``InspectOptions``) before any is used."""
    import json

    from petalnet.data.discovery import discover
    InspectOptions(data=data, image_size=image_size, json=as_json, verify=verify_all, grid=grid, augment=augment,
                   skip_bad=skip_bad, **keys).check()
    src = discover(data, image_size)
    if src.note:   # a size read instead of the one asked for: said, never silent
        import warnings
        warnings.warn(src.note, stacklevel=2)
    datasets = open_splits(src, skip_bad=skip_bad, use_cache=not verify_all, **keys)
    summary = summarize(src, datasets)
    problems = [named(p) for p in verify(datasets, skip_bad=skip_bad, progress=progress)] if verify_all else []
    if grid:
        name = next((n for n, d in datasets.items() if d.labeled), next(iter(datasets)))
        if augment:
            augment_grid(datasets[name], grid, parse_augment(augment), title=f"{name}: {augment}")
        else:
            sample_grid(datasets[name], grid, title=f"{name} ({summary['image_size']} px)")
    if as_json:
        return json.dumps({**summary, **({"verified": {"problems": problems}} if verify_all else {})}, indent=1), \
            bool(problems)
    lines = [format_summary(src.root, summary)]
    if verify_all:
        lines.append(f"verified {sum(len(d) for d in datasets.values())} records: "
                     + (f"{len(problems)} problem(s)" if problems else "all checksums and images good"))
    lines += [f"  bad: {p}" for p in problems] + ([f"grid: {grid}"] if grid else [])
    return "\n".join(lines), bool(problems)

