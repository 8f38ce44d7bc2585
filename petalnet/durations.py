"""Durations as people write them: ``duration`` (and ``short``) formats seconds (``2m10s``), ``parse_duration`` reads
``--budget``'s value (``90s``, ``20m``, ``1h30m``). Plain Python: the CLI's parser and
``config.TrainConfig.check`` use it without importing torch."""
from __future__ import annotations

import math
import re

from petalnet.errors import OptionError

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def short(seconds: float) -> str:
    """``duration``, with decimals under 10 s (an epoch on cached features can take a fraction of one)."""
    return f"{seconds:.2f}s" if seconds < 0.995 else f"{seconds:.1f}s" if seconds < 9.95 else duration(seconds)


def parse_duration(value, flag: str = "--budget") -> float:
    """Seconds in ``value``: hours, minutes and seconds in that order, each optional, at least one
    (``90s``, ``5m``, ``1h30m``, ``1.5h``); a number (the Python API) is seconds. A unit is required in
    text: a bare ``20`` could mean seconds or minutes. Anything else, or not more than 0 seconds, is an
    OptionError naming ``flag`` and the value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip().lower())) and any(m.groups()):
        h, mins, s = (float(g or 0) for g in m.groups())
        seconds = h * 3600 + mins * 60 + s
    else:
        shown = value if isinstance(value, str) and value.strip() else repr(value)
        raise OptionError(f"{flag} {shown}: not a duration: write it as 90s, 20m, 1h or 1h30m")
    if not math.isfinite(seconds):
        raise OptionError(f"{flag} {value}: must be a finite duration")
    if seconds <= 0:
        raise OptionError(f"{flag} {value}: must be more than 0 seconds")
    return seconds
