"""The frozen part's cache with augmented views (``--cache-views``): drawn once, deterministic, each epoch
showing one view per image; and when the plan uses it."""
import json

import pytest
import torch
from torch import nn

from petalnet.accel import DevicePreprocess
from petalnet.augment import AugmentConfig, flip_mask
from petalnet.batches import CachedBatches
from petalnet.cache import FeatureCache
from petalnet.config import TrainConfig
from petalnet.errors import OptionError
from petalnet.models import create_model
from petalnet.frozen import freeze
from petalnet.plan import make_plan

SIZE = 32


def _images(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)


def _build(augmented, aug=AugmentConfig(rrc=0.5, color=0.2), seed=0, mirror=True):
    images = _images()
    loader = [(images[:8], torch.arange(8) % 3, torch.arange(8)), (images[8:], torch.arange(8, 12) % 3, torch.arange(8, 12))]
    prep = DevicePreprocess(torch.device("cpu"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), SIZE, channels_last=False)
    cache = FeatureCache.build(nn.Identity(), loader, prep, lambda: torch.autocast("cpu", enabled=False),
                               torch.float32, augmented=augmented, aug=aug, seed=seed, mirror=mirror)
    return cache, prep(images)


def test_augmented_views_are_drawn_once_beside_the_image_and_its_mirror():
    cache, x = _build(3)
    assert cache.views == 5 and len(cache) == 12
    assert torch.equal(cache.features[0], x) and torch.equal(cache.features[1], x.flip(-1))
    for v in range(2, 5):   # each augmented view is new: not the image, its mirror or another view
        for w in range(v):
            assert not torch.allclose(cache.features[v], cache.features[w]), (v, w)
    again, _ = _build(3)
    assert torch.equal(again.features, cache.features)   # the same cache on every run (seeded per view, batch)
    other, _ = _build(3, seed=1)
    assert torch.equal(other.features[:2], cache.features[:2]) and not torch.equal(other.features[2:], cache.features[2:])
    assert torch.equal(_build(0)[0].features, cache.features[:2])


def test_each_epoch_shows_every_image_once_in_one_of_its_views():
    cache, _ = _build(3)
    batches = CachedBatches(cache, batch_size=5, seed=0, flips=True)
    seen = torch.zeros(12, 5, dtype=torch.long)
    for epoch in range(40):
        rows = []
        for x, y in batches.epoch(epoch, 0):
            for row in x:   # which (image, view) this row is
                match = [(i, v) for v in range(5) for i in range(12) if torch.equal(cache.features[v, i], row)]
                assert len(match) == 1
                rows.append(match[0][0])
                seen[match[0]] += 1
        assert sorted(rows) == list(range(12))
    assert (seen > 0).all()   # over epochs every view of every image is shown
    no_mirror = CachedBatches(cache, batch_size=12, seed=0, flips=False)
    for epoch in range(10):
        x, _ = next(no_mirror.epoch(epoch, 0))
        assert not any(torch.equal(row, cache.features[1, i]) for row in x for i in range(12))


def test_image_and_mirror_cache_flips_by_the_loaders_coins():
    """Two views: the mirror is shown exactly where the loader's flip coin would mirror the image, so a
    cached run augments like one reading the records."""
    cache, _ = _build(0)
    x, _ = next(CachedBatches(cache, batch_size=12, seed=3, flips=True).epoch(2, 0))
    order = torch.cat([idx for _, _, idx in cache.batches(12, 2, 3)])
    coins = flip_mask(order, 2, 3)
    for row, i, flipped in zip(x, order, coins):
        assert torch.equal(row, cache.features[int(flipped), i])


def _plan(**options):
    cfg = TrainConfig(model="tf_efficientnet_lite0", pretrained=False, unfreeze_from=5, freeze_backbone=False,
                      **options)
    cfg.check()
    model, _ = create_model(cfg.model, 104, pretrained=False)
    freeze(model, cfg)
    return make_plan(cfg, torch.device("cpu"), "32-true", 1, model, 64, (100, 20))


def test_the_plan_caches_augmented_views_only_when_asked_and_possible():
    assert _plan().frozen == "cached-bottom" and _plan().cache_views == 0
    assert _plan(rrc=0.5).frozen == "none"   # augmentation drawn per step: the bottom runs every step
    plan = _plan(rrc=0.5, cache_views=4)
    assert plan.frozen == "cached-bottom" and plan.cache_views == 4 and plan.resolved()["cache_views"] == 4
    assert _plan(rrc=0.5, mixup=0.2, cache_views=4).frozen == "none"   # MixUp mixes images per step
    with pytest.raises(OptionError, match="--cache-views 2: the views are drawn by"):
        _plan(cache_views=2)


def test_a_budget_caches_the_views_that_fit_a_quarter_of_it(monkeypatch):
    import petalnet.plan
    monkeypatch.setattr(petalnet.plan, "seconds_per_view", lambda *a: 0.01)   # 10 ms per image and view, timed
    # 100 train + 20 val images: image and mirror take 240 x 10 ms; a quarter of the budget holds the rest
    roomy = _plan(rrc=0.5, cache_views=4, budget="10h")
    assert roomy.cache_views == 4 and roomy.note is None
    assert _plan(rrc=0.5, cache_views=4, budget="20s").cache_views == 2      # 5 s: 500 - 240 -> 2 views of 100
    tight = _plan(rrc=0.5, cache_views=4, budget="9s")   # not even the images and mirrors fit: no crops
    assert tight.frozen == "cached-bottom" and tight.cache_views == 0
    assert tight.note == ("--budget 9.0s: 0 of the 4 augmented views cached (the cache pass may take a quarter "
                          "of the budget: 10.0 ms per image and view here)")


def test_a_run_with_cached_views_trains_from_them(tmp_path):
    from petalnet.data.synthetic import synthetic_data
    from petalnet.engine import train
    data = synthetic_data(64, seed=0, root=str(tmp_path / "syn"))
    summary = train(TrainConfig(data=data, out=str(tmp_path / "run"), epochs=2, precision="32", workers=0, quiet=True,
                                pretrained=False, unfreeze_from=5, freeze_backbone=False, rrc=0.5, cache_views=2,
                                lr=1e-3))
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["frozen"] == "cached-bottom" and resolved["cache_views"] == 2
    assert summary["epochs"] == 2 and summary["best_val_macro_f1"] is not None


def test_a_budget_without_cached_views_caches_image_and_mirror_only():
    assert _plan(budget="10h").cache_views == 0 and _plan(budget="1s").cache_views == 0
