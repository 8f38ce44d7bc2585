"""spmd_ops: batch norm and grouped convolutions rewritten for XLA's SPMD partitioner give torch's results
(float64: to rounding), in training and evaluation, forward and backward, running statistics included."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from petalnet.augment import AugmentConfig, geometric
from petalnet.spmd_ops import BatchLocalOps, batch_norm_ops, depthwise_taps, grid_sample_gather

D = torch.float64


@settings(max_examples=40, deadline=None)
@given(k=st.sampled_from([1, 3, 5, 7]), stride=st.sampled_from([1, 2]), dilation=st.sampled_from([1, 2]),
       pad=st.sampled_from([0, 1, 2, 3, "same", "valid"]), size=st.integers(13, 17), bias=st.booleans())
def test_depthwise_taps_is_the_depthwise_convolution(k, stride, dilation, pad, size, bias):
    if pad == "same" and stride > 1:
        stride = 1   # torch refuses padding='same' with strides
    g = torch.Generator().manual_seed(size * 31 + k)
    x, w = torch.randn(3, 4, size, size, generator=g, dtype=D), torch.randn(4, 1, k, k, generator=g, dtype=D)
    b = torch.randn(4, generator=g, dtype=D) if bias else None
    want = F.conv2d(x, w, b, stride, pad, dilation, groups=4)
    got = depthwise_taps(x, w, b, stride, pad, dilation)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-12)


def test_batch_norm_ops_trains_and_evaluates_as_torchs_kernel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 4, 3, generator=g, dtype=D, requires_grad=True)
    w, b = (torch.rand(5, generator=g, dtype=D, requires_grad=True) for _ in range(2))
    up = torch.randn(6, 5, 4, 3, generator=g, dtype=D)
    stats = [(torch.randn(5, generator=g, dtype=D), torch.rand(5, generator=g, dtype=D) + 0.5)]
    stats.append(tuple(t.clone() for t in stats[0]))
    for training in (True, False):
        outs = []
        for fn, (rm, rv) in zip((F.batch_norm, batch_norm_ops), stats):
            y = fn(x, rm, rv, w, b, training, 0.3, 1e-3)
            outs.append((y, *torch.autograd.grad((y * up).sum(), (x, w, b))))
        for a, c in zip(*outs):
            assert torch.allclose(a, c, atol=1e-10)
        for a, c in zip(*stats):   # the running mean and variance moved alike
            assert torch.allclose(a, c, atol=1e-12)
    assert not torch.equal(stats[0][0], torch.zeros(5))


def test_batch_norm_ops_keeps_bf16_inputs_bf16():
    x = torch.randn(8, 3, 5, 5).bfloat16()
    y = batch_norm_ops(x, torch.zeros(3), torch.ones(3), training=True)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), F.batch_norm(x.float(), None, None, training=True), atol=2e-2)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "convnext_atto", "resnext26ts"])
def test_models_train_the_same_under_batch_local_ops(name):
    """A whole model's step (train mode: batch norm's statistics; depthwise, grouped and dense
    convolutions) under BatchLocalOps: the same outputs, gradients and running statistics (float64)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=7).to(D).train()
    other = copy.deepcopy(model)
    x = torch.rand(4, 3, 64, 64, dtype=D)
    want = model(x)
    want.square().mean().backward()
    grouped = []

    class Spy(BatchLocalOps):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.conv2d:   # the model's own calls
                grouped.append((kwargs or {}).get("groups", args[6] if len(args) > 6 else 1))
            return super().__torch_function__(func, types, args, kwargs)

    with Spy():
        got = other(x)
    got.square().mean().backward()
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-10)
    for (n, p), q in zip(model.named_parameters(), other.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-7, atol=1e-10), n
    for (n, s), t in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.allclose(s.to(D), t.to(D), atol=1e-10), n
    assert any(g > 1 for g in grouped)   # the model has grouped convolutions for the mode to rewrite


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), out=st.integers(1, 7), spread=st.floats(0.1, 3.0), seed=st.integers(0, 99))
def test_grid_sample_gather_is_torchs_bilinear_border_sampling(h, w, out, spread, seed):
    """The gathers equal torch's kernel in float64 for any grid, points outside the image (border
    padding) and exactly on pixel centres included."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 2, h, w, generator=g, dtype=torch.float64)
    grid = (torch.rand(3, out, out, 2, generator=g, dtype=torch.float64) * 2 - 1) * spread
    grid[0, 0, 0] = torch.tensor([(2 * 0 + 1) / w - 1, (2 * 0 + 1) / h - 1], dtype=torch.float64)   # a centre
    want = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(grid_sample_gather(x, grid), want, rtol=1e-12, atol=1e-12)


def test_augmentations_resample_the_same_under_batch_local_ops():
    """Deotte's affine and the random resized crop (``augment.geometric``) give the same images under
    ``BatchLocalOps`` as with torch's ``grid_sample``."""
    x = torch.rand(4, 3, 20, 20, dtype=torch.float64) * 255
    cfg = AugmentConfig(affine=1.0, rrc=0.4)
    want = geometric(x, cfg, 16, torch.Generator().manual_seed(3))
    with BatchLocalOps():
        got = geometric(x, cfg, 16, torch.Generator().manual_seed(3))
    assert got.shape == want.shape == (4, 3, 16, 16) and torch.allclose(got, want, rtol=1e-10, atol=1e-9)
