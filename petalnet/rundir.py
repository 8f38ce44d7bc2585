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
from petalnet.errors import OptionError, PetalnetError

RUN_FORMAT = 1   # config.json's "format": the mark of a run folder petalnet wrote (see ``is_run_folder``)
# the files petalnet writes in a run folder (train, demo, report, evaluate's default --out): --force
# removes these (and the temporaries of a killed writer of them) and nothing else; then the folders
# among them if that left them empty
WRITTEN = ("config.json", "history.jsonl", "summary.json", "curves.png", "lr.png", "data.json", "train_samples.png",
           "report.html", "checkpoints/best.pt", "checkpoints/last.pt",
           *(f"eval-*/{name}" for name in ("metrics.json", "confusion.png", "per_class.png", "mistakes.png",
                                           "examples.png")))
# config.json of a run folder written before RUN_FORMAT: TrainConfig's fields, these among them
_LEGACY_KEYS = {"data", "out", "model", "epochs", "seed", "resolved"}
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
            raise PetalnetError(f"{self.path} is not a petalnet run folder (its config.json, if any, was not "
                                "written by petalnet): --force replaces only run folders; choose another --out")
        remove_written(self.path)

    def open(self, checkpoint_bytes: int = 0) -> None:
        """Create the folders, and remove temporary files a killed writer left behind; first refuse a
        disk that cannot hold the checkpoints (``check_space``)."""
        if not self.writer:
            return
        check_space(self.path, checkpoint_bytes)
        os.makedirs(os.path.join(self.path, "checkpoints"), exist_ok=True)
        for folder in (self.path, os.path.join(self.path, "checkpoints")):
            for name in os.listdir(folder):
                if _TEMPORARY.match(name):
                    os.unlink(os.path.join(folder, name))

    def write_config(self, cfg, resolved: dict) -> None:
        if self.writer:
            write_json({"format": RUN_FORMAT, **dataclasses.asdict(cfg), "resolved": resolved},
                       os.path.join(self.path, "config.json"))

    def end_epoch(self, state, improved: bool) -> None:
        """best.pt (when improved), history, then last.pt: the order that keeps them consistent (above)."""
        if not self.writer:
            return
        if improved:
            checkpoint.save(state.best_checkpoint(), self.best)
        write_lines(state.history, os.path.join(self.path, "history.jsonl"))
        self.save_last(state)

    def nan_message(self, epoch: int, step: int) -> str:
        """The line a run that diverged at (0-based) ``epoch``, ``step`` ends with: what is kept, what to try."""
        kept = f"the last good checkpoint is {self.last}" if os.path.exists(self.last) else "no checkpoint was written"
        return f"training loss became NaN/inf at epoch {epoch + 1}, step {step}: stopped; {kept} (try a lower --lr)"

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
    """Whether petalnet wrote ``path``: its config.json has ``"format"`` (RUN_FORMAT or later), or, written
    before the format was recorded, the fields of a TrainConfig and its ``resolved`` section. Any other
    config.json (or none) is someone else's folder."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict):
        return False
    if "format" in config:
        return isinstance(config["format"], int) and config["format"] >= 1
    return _LEGACY_KEYS <= config.keys() and isinstance(config["resolved"], dict)


def remove_written(path: str) -> list[str]:
    """Remove what petalnet wrote in the run folder ``path`` (WRITTEN, and temporaries of those files);
    then the folders among them that this left empty. Returns what was removed, relative to ``path``."""
    removed, folders = [], set()
    for name in WRITTEN:
        pattern = os.path.join(glob.escape(path), name)
        for found in sorted(glob.glob(pattern) + [f for f in glob.glob(pattern + ".*.tmp*") if _TEMPORARY.match(f)]):
            if os.path.isfile(found) or os.path.islink(found):
                os.unlink(found)
                removed.append(os.path.relpath(found, path))
                folders.add(os.path.dirname(found))
    for folder in folders:   # checkpoints/, eval-*/: one level below ``path``
        if not os.path.samefile(folder, path) and not os.listdir(folder):
            os.rmdir(folder)
    return removed


def check_space(path: str, checkpoint_bytes: int) -> None:
    """Refuse, before training, a disk without room for the run's checkpoints: ``checkpoint_bytes``
    (best.pt + last.pt, ``RunState.checkpoint_bytes``, from the model's parameters) once, and each
    again while its new copy is written beside it (``atomic_path``), less what the checkpoints there now
    hold (replaced as the run goes)."""
    if checkpoint_bytes <= 0:
        return
    held = sum(os.path.getsize(f) for f in (os.path.join(path, "checkpoints", n) for n in ("best.pt", "last.pt"))
               if os.path.isfile(f))
    need = 2 * checkpoint_bytes - held
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return   # unknown: the writes say what fails
    if need > free:
        raise PetalnetError(f"{path}: the disk has {free:,} bytes free; this run's checkpoints need about "
                            f"{need:,} (best.pt and last.pt of {checkpoint_bytes:,} bytes together, and a new "
                            "copy beside each while it is written): free some space or choose another --out")


def _local(path: str) -> str | None:
    """The local folder or file a DATA/weights argument names (the fixed part of a glob), or None for URLs."""
    if files.is_url(path):
        return None
    path = files.local_path(path)
    if os.path.exists(path):   # an existing path as typed, whatever characters it holds
        return os.path.realpath(path)
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
