"""The current-figures table, generated from benchmarks/records/*.json (written by ``record.record``).

    python benchmarks/figures.py            # print the table (markdown)
    python benchmarks/figures.py --write    # rewrite the generated blocks of README.md and RESULTS.md
    python benchmarks/figures.py --check    # exit 1 when those blocks differ from the records (CI)

The docs build (docs/hooks/generated.py) puts ``table()`` into the Benchmarks page; README.md's headline
figures and RESULTS.md's current figures sit between ``<!-- figures:NAME -->`` and ``<!-- /figures -->``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECORDS = os.path.join(HERE, "records")
# the table's order: by benchmark, in this order, then by name; a benchmark not listed comes last
ORDER = ("bench_input.py", "bench_train.py", "bench_allocator.py", "bench_scaling.py", "bench_accuracy.py",
         "bench_predict.py", "bench_memory.py", "bench_serve.py", "bench_xla.py", "bench_gpu.py", "bench_decode.py")
# the README's headline figures: these records, in this order
HEADLINE = ("accuracy-default", "predict-default", "input-vs-tfdata", "gpu-accuracy-331",
            "train-cuda-efficientnet_b0-all-compile", "gpu-predict")
BLOCK = re.compile(r"(<!-- figures:([\w-]+)(?::([\w-]+))? -->\n).*?(<!-- /figures -->)", re.S)


def load(folder: str = RECORDS) -> list[dict]:
    """Every record in ``folder``, in the table's order. A record that is not JSON is one error naming it."""
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                rows.append(json.load(f))
        except ValueError as e:
            raise SystemExit(f"figures: {path}: not a JSON record ({e})")
    rank = {b: i for i, b in enumerate(ORDER)}
    return sorted(rows, key=lambda r: (rank.get(r.get("benchmark"), len(ORDER)), r["name"]))


def number(v) -> str:
    return str(v) if isinstance(v, int) or not isinstance(v, float) else f"{v:.4g}"


def figure_text(r: dict, detail: bool = True) -> str:
    """``**figure unit** vs peer unit (peer_label), ratio **r**; detail``."""
    unit = f" {r['unit']}" if r.get("unit") else ""
    text = f"**{number(r['figure'])}{unit}**"
    if r.get("peer") is not None:
        text += f" vs {number(r['peer'])}{unit}" + (f" ({r['peer_label']})" if r.get("peer_label") else "")
    if r.get("ratio") is not None:
        text += f", ratio **{number(r['ratio'])}**"
    return text + (f"; {r['detail']}" if detail and r.get("detail") else "")


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(folder: str = RECORDS, prefix: str = "") -> str:
    """The current-figures table: one row per record (whose name starts with ``prefix``)."""
    lines = ["| what | figure | command | date | machine |", "| --- | --- | --- | --- | --- |"]
    for r in (r for r in load(folder) if r["name"].startswith(prefix)):
        lines.append(f"| {cell(r['what'])} | {cell(figure_text(r))} | `{cell(r['command'])}` | {cell(r['date'])} "
                     f"| {cell(r['machine'])} |")
    return "\n".join(lines) + "\n"


def headline(folder: str = RECORDS, prefix: str = "") -> str:
    """The README's few figures: one line each (without the details), with its date and machine."""
    rows = {r["name"]: r for r in load(folder)}
    return "".join(f"- {rows[n]['what']}: {figure_text(rows[n], detail=False)} ({rows[n]['date']}, {rows[n]['machine']})\n"
                   for n in HEADLINE if n in rows)


def fill(text: str, folder: str = RECORDS) -> str:
    """``text`` with each generated block made anew: ``<!-- figures:table -->`` (every record),
    ``<!-- figures:table:PREFIX -->`` (the records whose name starts with PREFIX), ``<!-- figures:headline -->``."""
    makers = {"table": table, "headline": headline}

    def block(m):
        if m.group(2) not in makers:
            raise SystemExit(f"figures: unknown block figures:{m.group(2)} (known: {', '.join(makers)})")
        return m.group(1) + makers[m.group(2)](folder, m.group(3) or "") + m.group(4)
    return BLOCK.sub(block, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", default=RECORDS, help="folder of records (default: benchmarks/records)")
    ap.add_argument("--write", action="store_true", help="rewrite the blocks of README.md and RESULTS.md")
    ap.add_argument("--check", action="store_true", help="exit 1 when a block differs from the records")
    args = ap.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write(table(args.records))
        return 0
    stale = []
    for path in (os.path.join(ROOT, "README.md"), os.path.join(HERE, "RESULTS.md")):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        new = fill(old, args.records)
        if new != old:
            stale.append(os.path.relpath(path, ROOT))
            if args.write:
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    f.write(new)
                os.replace(path + ".tmp", path)
    if stale and args.check:
        print(f"figures: {', '.join(stale)} differ from benchmarks/records: run python benchmarks/figures.py "
              "--write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
