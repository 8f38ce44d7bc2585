"""petalnet.recipes.recipe_config on its own (test_train.py checks the CLI's precedence rule)."""
import copy
import dataclasses

import pytest
import timm
import torch

from petalnet.config import TrainConfig
from petalnet.errors import PetalnetError
from petalnet.augment import TTA_VIEWS
from petalnet import recipes
from petalnet.recipes import AUTO_RECIPES, RECIPES, recipe_config, resolve_recipe
from petalnet.schedules import SCHEDULES
from petalnet.optim import lr_schedule

DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def test_the_five_recipes():
    assert list(RECIPES) == ["default", "fast", "tutorial", "linear", "finetune"]


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_builds_a_valid_config(name):
    cfg = recipe_config(name)
    assert isinstance(cfg, TrainConfig) and cfg.recipe == name
    for key, value in RECIPES[name].items():   # every value lands in its field ...
        assert getattr(cfg, key) == value, key
        default = DEFAULTS[key]   # ... with the field's type
        if isinstance(default, bool):
            assert isinstance(value, bool), key
        elif isinstance(default, (int, float)):
            assert isinstance(value, (int, float)) and not isinstance(value, bool), key
        elif isinstance(default, str):
            assert isinstance(value, str), key
    for key in set(DEFAULTS) - set(RECIPES[name]) - {"recipe"}:   # the rest keep TrainConfig's defaults
        assert getattr(cfg, key) == DEFAULTS[key], key
    assert timm.is_model(cfg.model), cfg.model
    assert cfg.lr_schedule in SCHEDULES and cfg.optimizer in ("adamw", "adam", "sgd") and cfg.tta in TTA_VIEWS
    assert cfg.epochs >= 1 and cfg.batch_size >= 1 and 0 <= cfg.label_smoothing < 1
    assert cfg.unfreeze_from is None or cfg.unfreeze_from >= 0
    schedule = lr_schedule(cfg, 1)   # the schedule it asks for can be built, and rises to a positive peak
    assert schedule.peak > 0 and max(schedule.curve(10)[1]) == pytest.approx(schedule.peak)
    cfg.augment()


def test_explicit_options_win_over_the_recipe():
    cfg = recipe_config("tutorial", model="tf_efficientnet_lite0", epochs=3, lr=2e-4, flip=False)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.flip) == ("tf_efficientnet_lite0", 3, 2e-4, False)
    assert (cfg.optimizer, cfg.lr_schedule, cfg.batch_size, cfg.freeze_backbone) == ("adam", "competition", 16, True)
    # an explicit None is a value too: it clears the recipe's
    assert recipe_config("default", unfreeze_from=None).unfreeze_from is None
    assert recipe_config("default").unfreeze_from == 5
    # an option the recipe does not set
    assert recipe_config("linear", seed=7).seed == 7
    # the recipe recorded is always the one used
    assert recipe_config("linear", recipe="default").recipe == "linear"


def test_overrides_do_not_leak_into_the_recipes():
    before = copy.deepcopy(RECIPES)
    recipe_config("default", epochs=1, model="resnet10t", lr=0.5)
    assert RECIPES == before
    assert recipe_config("default").epochs == 12


def test_unknown_recipe_or_option_is_one_clear_error():
    with pytest.raises(PetalnetError, match=r"^--recipe nope: choose one of default, fast, tutorial, linear, finetune$"):
        recipe_config("nope")
    with pytest.raises(PetalnetError, match=r"^unknown training options: bogus, lrate$"):
        recipe_config("default", lrate=1e-3, bogus=1, epochs=2)


def test_auto_recipe_by_hardware():
    assert resolve_recipe("auto", "cpu") == ("default", "recipe default: the one for a CPU (--recipe auto; "
                                                        "--recipe NAME for another)")
    assert resolve_recipe(None, "cuda")[0] == "finetune" and "a GPU" in resolve_recipe(None, "cuda")[1]
    assert resolve_recipe("auto", "gpu")[0] == "finetune"   # Lightning's accelerator name
    assert resolve_recipe("auto", "tpu")[0] == resolve_recipe("auto", "xla")[0] == "default"
    # every recipe passes XLA's refusals (only CUDA-only features and fp16 are refused there)
    from petalnet.plan import xla_refusals
    for name in RECIPES:
        xla_refusals(recipe_config(name), "32-true")
    # every entry names a recipe that exists and builds a config
    for name in AUTO_RECIPES.values():
        assert recipe_config(name).recipe == name


def test_auto_table_is_the_one_place_to_change(monkeypatch):
    monkeypatch.setitem(recipes.AUTO_RECIPES, "cuda", "default")
    assert resolve_recipe("auto", "cuda")[0] == "default"


def test_named_recipe_kept_and_unknown_ones_refused():
    for name in RECIPES:
        assert resolve_recipe(name, "cuda") == (name, f"recipe {name} (as asked)")
    with pytest.raises(PetalnetError, match=r"^--recipe nope: choose auto or one of default, fast, tutorial"):
        resolve_recipe("nope", "cpu")
    with pytest.raises(PetalnetError, match=r"^--recipe auto: no recipe chosen for a meta device"):
        resolve_recipe("auto", "meta")
