"""What ``petalnet inspect`` reports: per-split counts and classes, full verification, sample grids."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from petalnet.classes import class_name
from petalnet.data.dataset import TFRecordImages
from petalnet.data.discovery import DataSource
from petalnet.errors import DataError, PetalnetError


def open_splits(src: DataSource, **kwargs) -> dict[str, TFRecordImages]:
    return {name: TFRecordImages(paths, image_size=src.image_size, **kwargs) for name, paths in src.splits.items()}


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
