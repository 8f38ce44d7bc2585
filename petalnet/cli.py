"""petalnet: train, evaluate and serve flower classifiers on competition TFRecords.

One subcommand per job; bad input is one error line and a non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from petalnet import __version__
from petalnet.errors import PetalnetError

EXAMPLES = """examples:
  petalnet demo                                    # built-in synthetic flowers, no download
  petalnet inspect ../shared/data/petals-mini --verify
  petalnet inspect DATA --json
  petalnet convert my_photos/ out/ --size 224 --val-fraction 0.2
"""


def _progress():
    """tqdm on a terminal, nothing otherwise (logs stay one line per event)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return lambda it, **kw: tqdm(it, leave=False, **kw)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-key", default="image", help="feature holding the JPEG bytes (default: image)")
    p.add_argument("--label-key", default="class", help="feature holding the int64 label (default: class)")
    p.add_argument("--id-key", default="id", help="feature holding the image id (default: id)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip records with bad checksums or truncation (counted in a warning) instead of failing")


def cmd_inspect(args) -> int:
    from petalnet.data.discovery import discover
    from petalnet.data.summary import format_summary, open_splits, sample_grid, summarize, verify
    src = discover(args.data if len(args.data) > 1 else args.data[0], args.image_size)
    datasets = open_splits(src, image_key=args.image_key, label_key=args.label_key, id_key=args.id_key,
                           skip_bad=args.skip_bad, use_cache=not args.verify)
    summary = summarize(src, datasets)
    problems = verify(datasets, skip_bad=args.skip_bad, progress=_progress()) if args.verify else []
    if args.grid:
        name = next((n for n, d in datasets.items() if d.labeled), next(iter(datasets)))
        sample_grid(datasets[name], args.grid, title=f"{name} ({summary['image_size']} px)")
    if args.json:
        if args.verify:
            summary["verified"] = {"problems": problems}
        print(json.dumps(summary, indent=1))
    else:
        print(format_summary(src.root, summary))
        if args.verify:
            print(f"verified {sum(len(d) for d in datasets.values())} records: "
                  + (f"{len(problems)} problem(s)" if problems else "all checksums and images good"))
        for p in problems:
            print(f"  bad: {p}")
        if args.grid:
            print(f"grid: {args.grid}")
    return 1 if problems else 0


def cmd_convert(args) -> int:
    from petalnet.data.convert import convert
    written = convert(args.image_dir, args.out, args.size, val_fraction=args.val_fraction, seed=args.seed,
                      quality=args.quality, shard_size=args.shard_size, force=args.force, progress=_progress())
    for split, paths in written.items():
        print(f"{split}: {len(paths)} file(s) in {os.path.dirname(paths[0])}")
    return 0


def cmd_classes(args) -> int:
    from petalnet.classes import CLASSES
    for i, name in enumerate(CLASSES):
        print(f"{i:>3} {name}")
    return 0


def cmd_demo(args) -> int:
    from petalnet.data.discovery import discover
    from petalnet.data.summary import format_summary, open_splits, sample_grid, summarize, verify
    from petalnet.data.synthetic import synthetic_data
    out = args.out
    if os.path.exists(out) and os.listdir(out) and not args.force:
        raise PetalnetError(f"{out} already exists: pass --force to overwrite it, or --out another folder")
    os.makedirs(out, exist_ok=True)
    root = synthetic_data(args.image_size, seed=args.seed)
    print(f"synthetic flowers: {root}")
    src = discover(root)
    datasets = open_splits(src)
    summary = summarize(src, datasets)
    verify(datasets, skip_bad=False)
    print(format_summary(src.root, summary))
    grid = sample_grid(datasets["train"], os.path.join(out, "train_samples.png"), title="synthetic train")
    with open(os.path.join(out, "data.json"), "w") as fh:
        json.dump({"data": root, **summary}, fh, indent=1)
    print(f"wrote {grid} and {os.path.join(out, 'data.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petalnet", description=__doc__.splitlines()[0] if __doc__ else None,
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"petalnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="generate the built-in synthetic flowers and show them (no download)")
    p.add_argument("--out", default="petalnet-demo", help="run folder to write (default: petalnet-demo)")
    p.add_argument("--image-size", type=int, default=128, help="synthetic image size (default: 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing --out folder")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("inspect", help="count, check and picture a TFRecord dataset",
                       description="DATA: the folder holding tfrecords-jpeg-SxS/, one tfrecords-jpeg-SxS folder, "
                                   "a split folder, a glob or a file; local or an fsspec URL (gs://, s3://, https://).")
    p.add_argument("data", nargs="+", metavar="DATA")
    p.add_argument("--image-size", type=int, help="pick tfrecords-jpeg-SxS when DATA holds several sizes")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verify", action="store_true",
                   help="read every record, check every checksum and decode every image")
    p.add_argument("--grid", metavar="FILE.png", help="write a grid of sample images titled with their classes")
    _data_args(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="turn a class-per-folder image tree into competition TFRecords",
                       description="IMAGE_DIR/<class>/*.jpg, where <class> is a competition class name "
                                   "(daisy, common_tulip) or index (48), becomes "
                                   "OUT/tfrecords-jpeg-SxS/{train,val}/NN-SxS-COUNT.tfrec.")
    p.add_argument("image_dir", metavar="IMAGE_DIR")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--size", type=int, required=True, help="square image size in pixels (192, 224, 331, 512)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class put in val (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic split (default: 0)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    p.add_argument("--shard-size", type=int, default=512, help="records per file (default: 512)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT/tfrecords-jpeg-SxS")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("classes", help="list the 104 competition class names with their indices")
    p.set_defaults(func=cmd_classes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda msg, *a, **k: print(f"petalnet: warning: {msg}", file=sys.stderr)
            return args.func(args)
    except PetalnetError as e:
        print(f"petalnet: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:   # permissions, full disk, missing folders: the OS names the file
        print(f"petalnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("petalnet: interrupted", file=sys.stderr)
        return 130
