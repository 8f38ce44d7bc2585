import pytest

from petalnet import recipes
from petalnet.errors import PetalnetError
from petalnet.recipes import AUTO_RECIPES, RECIPES, recipe_config, resolve_recipe


def test_auto_recipe_by_hardware():
    assert resolve_recipe("auto", "cpu") == ("default", "recipe default: the one for a CPU (--recipe auto; "
                                                        "--recipe NAME for another)")
    assert resolve_recipe(None, "cuda")[0] == "finetune" and "a GPU" in resolve_recipe(None, "cuda")[1]
    assert resolve_recipe("auto", "gpu")[0] == "finetune"   # Lightning's accelerator name
    assert resolve_recipe("auto", "tpu")[0] == resolve_recipe("auto", "xla")[0] == "finetune"
    # every entry names a recipe that exists and builds a config
    for name in AUTO_RECIPES.values():
        assert recipe_config(name).recipe == name


def test_auto_table_is_the_one_place_to_change(monkeypatch):
    monkeypatch.setitem(recipes.AUTO_RECIPES, "cuda", "default")
    assert resolve_recipe("auto", "cuda")[0] == "default"


def test_named_recipe_kept_and_unknown_ones_refused():
    for name in RECIPES:
        assert resolve_recipe(name, "cuda") == (name, f"recipe {name} (as asked)")
    with pytest.raises(PetalnetError, match=r"^--recipe nope: choose auto or one of default, tutorial"):
        resolve_recipe("nope", "cpu")
    with pytest.raises(PetalnetError, match=r"^--recipe auto: no recipe chosen for a meta device"):
        resolve_recipe("auto", "meta")
