"""The vocabularies the commands share and the rules an option's value must pass, each spelled here once.

Every command's options are dataclass fields made by ``option`` (``config.TrainConfig``, ``commands``): a
field carries its help, group and rules; ``parser`` generates the command line from them, and
``Declared.check`` validates an instance, the command line's values and the Python API's alike, before
anything is read or written. The bottom of the package: plain Python, importing only ``errors``.
"""
from __future__ import annotations

import dataclasses
import math

from petalnet.errors import OptionError

# train's --precision: the names the command line offers, and every accepted name -> Fabric's
# (accel.resolve_precision); a resumed run's config holds the resolved ones
TRAIN_PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed",
              "bf16": "bf16-mixed", "16": "16-mixed"}
# predict's, evaluate's and serve's --precision (predict.inference_precision)
INFERENCE_PRECISIONS = ("auto", "32", "bf16")

# TTA modes -> the views averaged (augment.tta_view draws each)
TTA_VIEWS = {"none": ("identity",), "flip": ("identity", "flip"), "full": ("identity", "flip", "zoom")}
TTA_MODES = tuple(TTA_VIEWS)
# TTA's extra views (the mirror, the zoom) run only for the images whose own view is unsure: a margin below
# this between its two most probable classes. The default's model over petals-mini (val and test, 1276
# images) ran the mirror for 20 % of them and gave every label the mirror of every image gave (at 0.3:
# 99.7 %), so its flip TTA costs 1.2 forwards an image instead of 2 (benchmarks/RESULTS.md).
TTA_MARGIN = 0.5   # predict, evaluate, compare, report, serve; --tta-margin

# the recipes (recipes.RECIPES holds their values); AUTO picks one by the hardware (recipes.resolve_recipe)
AUTO = "auto"
RECIPE_NAMES = ("default", "fast", "tutorial", "linear", "finetune")

MAX_IMAGE_SIZE = 4096   # pixels per side: a 4096 px RGB batch of 32 is 1.6 GB of uint8 before any model


def at_least(m):
    return lambda v: None if v >= m else f"must be at least {m}"


def above(m):
    return lambda v: None if v > m else f"must be greater than {m}"


def at_most(m):
    return lambda v: None if v <= m else f"must be at most {m}"


def below(m):
    return lambda v: None if v < m else f"must be less than {m}"


SEED = (at_least(0), below(2 ** 32))   # numpy seeds: 32-bit
# train's augmentation strengths by name (their --flags and inspect --augment's SPEC)
AUGMENT_RULES = {"affine": (at_least(0),), "rrc": (at_least(0), at_most(1)), "color": (at_least(0), at_most(1)),
                 "cutout": (at_least(0), at_most(1)), "mixup": (at_least(0),), "cutmix": (at_least(0),)}


def check_number(flag: str, value, *rules, integer: bool = False, optional: bool = False) -> None:
    """Raise OptionError ``--flag VALUE: must be ...`` unless ``value`` is a finite number (a whole one when
    ``integer``; None when ``optional``) that every rule (``at_least(1)``...) accepts."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"{flag} {value!r}: must be a number")
    if integer and not isinstance(value, int):
        raise OptionError(f"{flag} {value}: must be a whole number")
    if not math.isfinite(value):
        raise OptionError(f"{flag} {value}: must be a finite number")
    for rule in rules:
        problem = rule(value)
        if problem:
            raise OptionError(f"{flag} {value}: {problem}")


def augment_spec(spec: str, flag: str = "--augment") -> dict[str, float]:
    """'affine=1,color=0.2' -> {name: strength}, each name one of ``AUGMENT_RULES`` and its value passing
    that option's rules (a bare name: 1); else OptionError naming ``flag`` and the part."""
    values = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, text = part.partition("=")
        if name not in AUGMENT_RULES:
            raise OptionError(f"{flag} {spec}: unknown '{name}' (known: {', '.join(sorted(AUGMENT_RULES))})")
        try:
            values[name] = float(text) if text else 1.0
        except ValueError:
            raise OptionError(f"{flag} {spec}: '{part}' needs a number") from None
        try:
            check_number(name, values[name], *AUGMENT_RULES[name])
        except OptionError as e:
            raise OptionError(f"{flag} {part}: {str(e).split(': ', 1)[1]}") from None
    return values


ARG, MAIN = "positional arguments", "options"   # groups: a positional argument, a command's own option


def option(default, help: str, group: str = "", *, flag: str | None = None, negate: str | None = None,
           negate_help: str | None = None, rules: tuple = (), also: tuple = (), check=None, **argparse_kw):
    """A field and its command-line option. ``group``: where ``--help`` lists it (``ARG``: a positional
    argument, ``MAIN``: the command's own options; none: not on the command line); ``flag``: the option's
    name (default: the field's with dashes); ``negate``: a store_false flag (``--no-flip``), beside the
    store_true one where ``argparse_kw`` has that action; ``rules``: what a number must pass
    (``at_least(1)``...); ``also``: values accepted beside ``choices`` but not offered by the command line
    (other spellings, a resumed run's resolved value); ``check(value, flag)``: raises OptionError for a
    value of another kind (a duration, a spec)."""
    meta = dict(help=help, group=group, flag=flag, negate=negate, negate_help=negate_help, kw=argparse_kw,
                rules=rules, also=also, check=check)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(field: dataclasses.Field) -> str:
    """How errors name a field: its flag, or a positional argument's metavar."""
    meta = field.metadata
    if meta.get("group") == ARG:
        return meta["kw"].get("metavar") or field.name.upper()
    return meta.get("flag") or "--" + field.name.replace("_", "-")


def check_field(field: dataclasses.Field, value) -> None:
    """OptionError naming the option for a value its declaration refuses."""
    meta, kind, flag = field.metadata, str(field.type), flag_of(field)
    if value is None and "None" in kind:
        return
    if meta.get("rules"):
        check_number(flag, value, *meta["rules"], integer="int" in kind and "float" not in kind)
    choices = meta.get("kw", {}).get("choices")
    if choices and value not in (*choices, *meta.get("also", ())):   # argparse checks the command line's
        raise OptionError(f"{flag} {value}: choose {', '.join(map(str, choices))}")
    if meta.get("check"):
        meta["check"](value, flag)


class Declared:
    """A command's options (a dataclass of ``option`` fields): ``check`` validates every field by its
    declaration, then the rules between fields (``check_together``)."""

    def check(self):
        for field in dataclasses.fields(self):
            check_field(field, getattr(self, field.name))
        self.check_together()
        return self

    def check_together(self) -> None:
        """Rules between fields, after each field passed its own."""

    @classmethod
    def check_value(cls, name: str, value) -> None:
        """One field's check, for a function that takes that option alone (``predict.predict_batches``)."""
        check_field(next(f for f in dataclasses.fields(cls) if f.name == name), value)

    @classmethod
    def pick(cls, values: dict, **more):
        """An instance from the entries of ``values`` (parsed arguments' ``vars``) that are its fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**values, **more}.items() if k in names})
