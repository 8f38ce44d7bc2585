"""A benchmark's result as one JSON record in benchmarks/records/ (what the current-figures table is made of).

Each benchmark calls ``record(...)`` beside its final print; ``benchmarks/figures.py`` turns the records into
the table of the docs' Benchmarks page and the README's headline figures. A record's ``name`` is its row: a
rerun of the same measurement replaces it (the history of how each was measured stays in RESULTS.md).

    {"name": "input-vs-tfdata", "benchmark": "bench_input.py", "what": "Input pipeline vs tf.data (...)",
     "figure": 5823, "unit": "img/s", "peer": 2803, "peer_label": "tf.data", "ratio": 2.08, "detail": "...",
     "command": "python benchmarks/bench_input.py --peer ...", "date": "2026-11-26 23:35", "machine": "..."}

``PETALNET_RECORDS`` names another folder (a trial run that should not replace the committed figures).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys

RECORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "records")
FIELDS = ("name", "benchmark", "what", "figure", "unit", "peer", "peer_label", "ratio", "detail", "command",
          "date", "machine")


def machine() -> str:
    """This machine in a few words: CPU model and cores, memory, and the GPU when torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    words = [f"{os.cpu_count()} cores {cpu}"]
    try:
        words.append(f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        words.insert(0, sys.modules["torch"].cuda.get_device_name())
    return ", ".join(words)


def command() -> str:
    """The command that ran this benchmark, as typed from the repository's root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]))
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


def record(name: str, what: str, figure: float, unit: str, *, peer: float | None = None,
           peer_label: str | None = None, ratio: float | None = None, detail: str = "",
           folder: str | None = None, **given) -> str:
    """Write (or replace) ``records/<name>.json``; ``given`` may set ``command``, ``date``, ``machine`` (default:
    this run's). Returns the path. Written beside and renamed, so a reader never sees half a record."""
    folder = folder or os.environ.get("PETALNET_RECORDS") or RECORDS
    unknown = set(given) - {"command", "date", "machine", "benchmark"}
    if unknown:
        raise TypeError(f"record(): unknown fields {sorted(unknown)}")
    row = {"name": name, "benchmark": given.get("benchmark") or os.path.basename(sys.argv[0]), "what": what,
           "figure": figure, "unit": unit, "peer": peer, "peer_label": peer_label, "ratio": ratio, "detail": detail,
           "command": given.get("command") or command(),
           "date": given.get("date") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "machine": given.get("machine") or machine()}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(row, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"record: {os.path.relpath(path)}", flush=True)
    return path
