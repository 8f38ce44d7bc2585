"""No command writes onto one of its own inputs: an output path that is an input file (the checkpoint it
reads, a file of the run folder it reads, a data file) is refused in one line before anything is read."""
from __future__ import annotations

import glob
import os

from petalnet.errors import OptionError


def run_files(path: str) -> list[str]:
    """What reading the model ``path`` (a run folder, a checkpoint or an .onnx file) puts at stake: the
    file itself, or the files petalnet wrote in the run folder (its checkpoints, config, history, plots)."""
    from petalnet.rundir import WRITTEN
    if not os.path.isdir(path):
        return [path]
    return [f for name in WRITTEN for f in glob.glob(os.path.join(glob.escape(path), name))]


def same_file(a: str, b: str) -> bool:
    """Whether the paths name one file: the same real path, or (both existing) the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(option: str, output: str | None, inputs) -> None:
    """OptionError when ``output`` (given as ``option``) is one of ``inputs`` (paths of files read)."""
    if not output:
        return
    for inp in inputs:
        if same_file(output, inp):
            which = "is" if os.path.abspath(output) == os.path.abspath(inp) else f"is {inp},"
            raise OptionError(f"{option} {output} {which} one of this command's inputs: writing it would destroy "
                              f"what it reads; choose another {option}")
