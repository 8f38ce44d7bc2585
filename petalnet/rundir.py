"""The run folder: everything ``petalnet train`` writes, written from here and only here.

    RUN/config.json             every option and the resolved plan, before the first step
    RUN/history.jsonl           one line per finished epoch
    RUN/checkpoints/best.pt     the model at its best epoch (by val macro-F1; the last without validation)
    RUN/checkpoints/last.pt     where the run is (``state.RunState.last``)
    RUN/summary.json, curves.png, lr.png    at the end

Every file is written atomically. At an epoch's end ``best.pt`` and ``history.jsonl`` are written
before ``last.pt``: a run killed between the writes resumes from the previous ``last.pt``, redoes
that epoch (exactly: same batches, same draws) and writes all three again, so they always agree.
Only one process (rank 0) writes; the others hold a ``RunDir`` that writes nothing.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import contextlib
import fcntl
import re
import shutil
import time

from petalnet import checkpoint
from petalnet.atomic import write_json, write_lines
from petalnet.data import files
from petalnet.errors import PetalnetError

# what a run folder holds that petalnet wrote: --force removes these and nothing else
WRITTEN = ("config.json", "history.jsonl", "summary.json", "checkpoints", "curves.png", "lr.png", "data.json",
           "train_samples.png", "report.html", "eval-*")
_TEMPORARY = re.compile(r".*\.\d+\.tmp(\.\w+)?$")   # atomic_path's files of a killed writer
LOCK = ".petalnet.lock"   # held (flock) by the one process writing the folder; the kernel drops it at exit


@contextlib.contextmanager
def writing(path: str):
    """Hold the run folder ``path`` (created if missing) for one writer for the block: an exclusive
    ``flock`` on its LOCK file, which the kernel releases when the process ends, however it ends (a SIGKILL
    leaves no stale lock). A second writer, in this process or another, is refused before it writes
    anything, in one line naming the holder's PID and start time."""
    lock, new_folder = os.path.join(path, LOCK), not os.path.exists(path)
    new_lock = not os.path.exists(lock)
    try:
        os.makedirs(path, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise PetalnetError(f"{path}: cannot hold the run folder ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise PetalnetError(f"{path}: another petalnet process is writing this run folder ({holder}); wait "
                                "for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        try:
            yield
        except PetalnetError:   # refused or failed: take back the lock file (and the folder) this call made
            if new_lock and os.path.exists(lock):
                os.unlink(lock)
                if new_folder and not os.listdir(path):
                    os.rmdir(path)
            raise
    finally:
        os.close(fd)   # releases the lock


def read_finished(path: str) -> tuple[dict, list[dict], dict]:
    """(summary, history, config) of a finished run folder (compare and report read them); a file missing
    or unreadable is one PetalnetError line naming it."""
    found = []
    for name in ("summary.json", "history.jsonl", "config.json"):
        file = os.path.join(path, name)
        try:
            with open(file) as fh:
                found.append([json.loads(line) for line in fh if line.strip()] if name.endswith(".jsonl")
                             else json.load(fh))
        except FileNotFoundError:
            raise PetalnetError(f"{path}: no {name}: not a finished petalnet run folder") from None
        except (OSError, ValueError) as e:
            raise PetalnetError(f"{file}: unreadable ({e})") from None
    return found[0], found[1], found[2]


class RunDir:
    def __init__(self, path: str, writer: bool = True):
        self.path, self.writer = path, writer
        self.last = os.path.join(path, "checkpoints", "last.pt")
        self.best = os.path.join(path, "checkpoints", "best.pt")

    def prepare(self, force: bool, inputs: list[str]) -> None:
        """A new run: refuse an existing folder unless ``force``; then remove only what an earlier run
        wrote, and only from a folder that is a run folder and holds none of ``inputs`` (the data)."""
        if not self.writer or not os.path.exists(self.path) or (os.path.isdir(self.path) and
                                                                not set(os.listdir(self.path)) - {LOCK}):
            return
        if not force:
            raise PetalnetError(f"{self.path} already exists: pass --resume {self.path} to continue it, "
                                "--force to replace it, or another --out")
        for inp in inputs:
            if overlaps(self.path, inp):
                raise PetalnetError(f"--out {self.path} and the input {inp} overlap: --force would delete "
                                    "the input; choose another --out")
        if not is_run_folder(self.path):
            raise PetalnetError(f"{self.path} is not a petalnet run folder (no config.json or checkpoints/): "
                                "--force replaces only run folders; choose another --out")
        for name in WRITTEN:
            for found in glob.glob(os.path.join(glob.escape(self.path), name)):
                shutil.rmtree(found) if os.path.isdir(found) else os.unlink(found)

    def open(self) -> None:
        """Create the folders, and remove temporary files a killed writer left behind."""
        if not self.writer:
            return
        os.makedirs(os.path.join(self.path, "checkpoints"), exist_ok=True)
        for folder in (self.path, os.path.join(self.path, "checkpoints")):
            for name in os.listdir(folder):
                if _TEMPORARY.match(name):
                    os.unlink(os.path.join(folder, name))

    def write_config(self, cfg, resolved: dict) -> None:
        if self.writer:
            write_json({**dataclasses.asdict(cfg), "resolved": resolved}, os.path.join(self.path, "config.json"))

    def end_epoch(self, state, improved: bool) -> None:
        """best.pt (when improved), history, then last.pt: the order that keeps them consistent (above)."""
        if not self.writer:
            return
        if improved:
            checkpoint.save(state.best_checkpoint(), self.best)
        write_lines(state.history, os.path.join(self.path, "history.jsonl"))
        self.save_last(state)

    def save_last(self, state) -> None:
        """``last.pt``: where the run is (at an epoch's end, or inside one when stopped)."""
        if self.writer:
            checkpoint.save(state.last(), self.last)

    def finish(self, summary: dict, history: list[dict], schedule, steps_per_epoch: int, title: str,
               label_smoothing: float = 0.0, head_lr_scale: float = 1.0) -> None:
        if not self.writer:
            return
        write_json(summary, os.path.join(self.path, "summary.json"))
        from petalnet.plots import plot_history, plot_schedule
        plot_history(history, os.path.join(self.path, "curves.png"), title=title, label_smoothing=label_smoothing,
                     best_epoch=summary.get("best_epoch"))
        plot_schedule(schedule, steps_per_epoch, os.path.join(self.path, "lr.png"), head_lr_scale=head_lr_scale)


def is_run_folder(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name)) for name in ("config.json", "summary.json", "checkpoints"))


def _local(path: str) -> str | None:
    """The local folder or file a DATA/weights argument names (the fixed part of a glob), or None for URLs."""
    if files.is_url(path):
        return None
    path = files.local_path(path)
    fixed = re.split(r"[*?\[]", path, maxsplit=1)[0]
    if fixed != path:
        fixed = os.path.dirname(fixed) or "."
    return os.path.realpath(fixed)


def overlaps(out: str, inp: str) -> bool:
    """Whether ``out`` is, contains or lies inside the local path ``inp``."""
    a, b = os.path.realpath(out), _local(str(inp))
    if b is None:
        return False
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)
