import math

import pytest
import torch

from petalnet import augment
from petalnet.accel import DevicePreprocess
from petalnet.augment import AugmentConfig, flip_mask, step_generator


def _batch(n=6, size=48):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_affine_off_is_identity_and_strength_moves_pixels():
    x = _batch().float()
    g = step_generator(torch.device("cpu"), 0, 0, 0)
    same = augment.geometric(x, AugmentConfig(), 48, g)   # identity matrices: the same pixels
    assert torch.allclose(same, x, atol=1e-3)
    crop = augment.geometric(x, AugmentConfig(rrc=0.3), 48, g)
    assert (crop - x).abs().mean() > 5
    moved = augment.geometric(x, AugmentConfig(affine=1.0), 48, step_generator(torch.device("cpu"), 0, 0, 0))
    assert moved.shape == x.shape and (moved - x).abs().mean() > 5
    # each sample its own draw: the same image gets different transforms
    twin = x[:1].expand(4, -1, -1, -1)
    out = augment.geometric(twin, AugmentConfig(affine=1.0), 48, step_generator(torch.device("cpu"), 1, 0, 0))
    assert (out[0] - out[1]).abs().mean() > 1


def test_rotation_by_hand_matches_a_quarter_turn():
    """A rotation of 90 degrees through the matrices equals torch.rot90 (checks the composition order)."""
    x = _batch(1, 32).float()
    theta = torch.tensor([[[math.cos(math.pi / 2), -math.sin(math.pi / 2), 0.0],
                           [math.sin(math.pi / 2), math.cos(math.pi / 2), 0.0]]])
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 32, 32], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    assert torch.allclose(out, torch.rot90(x, 1, (2, 3)), atol=1e-3) or \
        torch.allclose(out, torch.rot90(x, -1, (2, 3)), atol=1e-3)


def test_same_step_same_draw_and_resizes_to_model_size():
    prep = DevicePreprocess(torch.device("cpu"), (0.5,) * 3, (0.5,) * 3, 64)
    cfg = AugmentConfig(affine=1.0, color=0.3, cutout=0.25)
    a = prep(_batch(), None, cfg, step_generator(torch.device("cpu"), 3, 2, 7))
    b = prep(_batch(), None, cfg, step_generator(torch.device("cpu"), 3, 2, 7))
    c = prep(_batch(), None, cfg, step_generator(torch.device("cpu"), 3, 2, 8))
    assert a.shape == (6, 3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    holes = (a == 0).all(1).flatten(1)
    assert (holes.sum(1) > 0).all() and (holes.sum(1) <= 17 * 17).all()   # one hole each, side 16
    assert not (holes[0] == holes[1]).all()                              # in different places


def test_color_keeps_gray_gray_and_range():
    gray = torch.full((4, 3, 8, 8), 100.0)
    out = augment.color(gray, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, 0], out[:, 1]) and out.min() >= 0 and out.max() <= 255
    assert out.flatten(1).std(1).max() < 1e-3 and out[:, 0, 0, 0].std() > 1   # per-sample brightness


def test_mixer_soft_targets_sum_to_one():
    mix = augment.mixer(AugmentConfig(mixup=0.4, cutmix=1.0), 104, 0.1)
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8)
    xm, t = mix(x, y)
    assert t.shape == (8, 104) and torch.allclose(t.sum(1), torch.ones(8))
    assert augment.mixer(AugmentConfig(), 104, 0.1) is None


@pytest.mark.parametrize("field", ["affine", "rrc", "color", "cutout", "mixup", "cutmix"])
def test_any_flag(field):
    assert AugmentConfig(**{field: 0.5}).any() and not AugmentConfig().any()


def test_channels_last_batches_normalise_to_the_same_numbers_as_nchw():
    """The row-wise fast path (channels-last uint8, no resampling) equals (x/255 - mean)/std per channel,
    with and without flips and cutout, and hands out channels-last."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    prep = DevicePreprocess(torch.device("cpu"), mean, std, 48)
    x = _batch(6, 48)
    want = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    for batch in (x, nhwc):
        got = prep(batch)
        assert torch.allclose(got, want, atol=1e-5) and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(prep(nhwc), prep(x))   # bit for bit the NCHW path
    flips = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(prep(nhwc, flips), prep(x, flips))
    assert torch.allclose(prep(nhwc, flips)[0], want[0].flip(-1), atol=1e-5)
    cut = AugmentConfig(cutout=0.25)
    g = lambda: step_generator(torch.device("cpu"), 1, 0, 0)   # noqa: E731
    assert torch.equal(prep(nhwc, None, cut, g()), prep(x, None, cut, g()))
    small = _batch(2, 40).contiguous(memory_format=torch.channels_last)   # resized: the general path
    assert prep(small).shape == (2, 3, 48, 48)
    assert torch.equal(prep(_batch(2, 48).contiguous(memory_format=torch.channels_last)), prep(_batch(2, 48)))


def _coin(index: int, epoch: int, seed: int) -> bool:
    """flip_mask's hash written out in Python integers (murmur-style mixing, modulo 2**32)."""
    m = 0xFFFFFFFF
    h = (index * 0x9E3779B1 + epoch * 0x85EBCA77 + seed * 0xC2B2AE3D) & m
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & m
    return bool(((h ^ (h >> 12)) >> 7) & 1)


def test_flip_mask_is_the_hash_of_sample_epoch_and_seed():
    idx = torch.tensor([0, 1, 2, 7, 1000, 12752, 2**31 - 1])
    for epoch, seed in ((0, 0), (3, 0), (0, 5), (11, 42)):
        assert flip_mask(idx, epoch, seed).tolist() == [_coin(i, epoch, seed) for i in idx.tolist()]
    assert flip_mask(idx.int(), 3, 1).tolist() == flip_mask(idx, 3, 1).tolist()   # int32 indices too


def test_flip_mask_same_coin_whoever_draws_it():
    """A sample's coin does not depend on which rank or batch holds it, nor on the order."""
    n, epoch, seed = 1000, 4, 9
    whole = flip_mask(torch.arange(n), epoch, seed)
    assert torch.equal(flip_mask(torch.arange(n), epoch, seed), whole)   # deterministic
    for world in (2, 3, 8):   # ShardSampler-style strided shards
        for rank in range(world):
            assert torch.equal(flip_mask(torch.arange(rank, n, world), epoch, seed), whole[rank::world])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flip_mask(perm, epoch, seed), whole[perm])   # shuffled batches
    for size in (1, 7, 64):
        batch = perm[:size]
        assert torch.equal(flip_mask(batch, epoch, seed), whole[batch])


def test_flip_mask_flips_about_half_and_changes_with_epoch_and_seed():
    n = 20000
    idx = torch.arange(n)
    a = flip_mask(idx, 0, 0)
    assert 0.48 < a.float().mean() < 0.52
    for other in (flip_mask(idx, 1, 0), flip_mask(idx, 0, 1)):
        assert 0.45 < (a != other).float().mean() < 0.55   # an independent coin, not the same or its negation
    # one sample over many epochs: mirrored in about half of them
    per_epoch = torch.stack([flip_mask(torch.tensor([17]), e, 0) for e in range(2000)])
    assert 0.45 < per_epoch.float().mean() < 0.55
    # no pattern along the index: neighbours agree about half the time (not alternating, not in runs)
    assert 0.45 < (a[1:] == a[:-1]).float().mean() < 0.55
