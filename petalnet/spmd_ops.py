"""Batch norm and grouped convolutions written as operations XLA's SPMD partitioner keeps split along the
batch (``BatchLocalOps``), for data-parallel training over several XLA devices; and the augmentations'
``grid_sample``, which torch_xla cannot lower, as gathers.

The partitioner (torch_xla 2.9's, the one a TPU's compiler runs too) handles a dense convolution, a matmul,
an elementwise op or a reduction over a batch-sharded tensor locally, but two operations every ImageNet
CNN has make it gather the whole batch onto every device and compute it there 8 times over:

- ``batch-norm-training`` (and its gradient), the op torch_xla emits for ``F.batch_norm`` in training mode:
  the partitioner has no rule for it and replicates its operand;
- a convolution with ``feature_group_count > 1`` (depthwise: EfficientNet, MobileNet, ConvNeXt; grouped:
  ResNeXt, RegNet) over a batch-sharded input: all-gathered, computed on the full batch, then sliced
  (openxla/xla#47945, open in 2026).

Measured on XLA's CPU backend, tf_efficientnet_lite0 at 64 px, global batch 64, one SGD step: 1 device 5.9 s,
8 devices 45.7 s with 2 all-gathers of the whole batch (every device ran all 64 images); under
``BatchLocalOps`` 8 devices 3.6 s, no all-gather, the batch norm statistics and the gradients summed by the
partitioner's all-reduces. Here batch norm is its arithmetic (the batch's mean and biased variance as
reductions, which the partitioner turns into all-reduces: the statistics of the global batch, as one device
computes them), a depthwise convolution the sum of its kernel's taps (a shifted slice of the input times
one weight per channel), and a grouped convolution one dense convolution per group. They equal torch's
kernels to float64 rounding (tests/test_spmd_ops.py); the running statistics update as torch's do.

Pure torch: used by ``engine.train`` on XLA (``accel.batch_local_ops``); nothing here imports torch_xla.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_BN_ARGS = tuple(inspect.signature(F.batch_norm).parameters)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _padded(x: torch.Tensor, kernel: tuple[int, int], stride, padding, dilation) -> torch.Tensor:
    """``x`` zero-padded as ``F.conv2d``'s ``padding`` says (ints, a pair, 'valid' or 'same')."""
    if padding == "valid":
        return x
    if padding == "same":   # torch's rule (stride 1): the extra row and column go after
        th, tw = (d * (k - 1) for d, k in zip(_pair(dilation), kernel))
        return F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    ph, pw = _pair(padding)
    return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x


def depthwise_taps(x: torch.Tensor, weight: torch.Tensor, bias=None, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups=channels)`` for a (C, 1, kh, kw) weight,
    as the sum over the kernel's taps of a strided slice of the padded input times the tap's weight per
    channel: slices, products and sums, which stay batch-local under SPMD."""
    kh, kw = weight.shape[-2:]
    (s0, s1), (d0, d1) = _pair(stride), _pair(dilation)
    x = _padded(x, (kh, kw), stride, padding, dilation)
    ho, wo = (x.shape[-2] - d0 * (kh - 1) - 1) // s0 + 1, (x.shape[-1] - d1 * (kw - 1) - 1) // s1 + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = x[:, :, i * d0:i * d0 + s0 * (ho - 1) + 1:s0, j * d1:j * d1 + s1 * (wo - 1) + 1:s1]
            term = tap * weight[:, 0, i, j].view(1, -1, 1, 1)
            out = term if out is None else out + term
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias=None, stride=1, padding=0, dilation=1,
                 groups: int = 1) -> torch.Tensor:
    """A grouped ``F.conv2d`` as one dense convolution per group, concatenated along the channels."""
    parts = zip(x.chunk(groups, 1), weight.chunk(groups, 0), bias.chunk(groups) if bias is not None else [None] * groups)
    return torch.cat([F.conv2d(xg, wg, bg, stride, padding, dilation) for xg, wg, bg in parts], 1)


def batch_norm_ops(x: torch.Tensor, running_mean, running_var, weight=None, bias=None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """``F.batch_norm`` as arithmetic: in training the batch's mean and biased variance (reductions over
    every dimension but the channels), the running statistics moved by ``momentum`` (the variance's unbiased
    estimate, as torch's kernel); otherwise the running statistics. In float32 at least (bf16 inputs under
    autocast are normalised in float32 and returned in bf16, as the kernel's statistics are)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    wide = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if training or running_mean is None:
        dims = [0, *range(2, x.dim())]
        mean = wide.mean(dims)
        var = (wide - mean.view(shape)).square().mean(dims)
        if training and running_mean is not None:
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
                unbiased = var.detach() * (n / max(n - 1, 1))
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    else:
        mean, var = running_mean, running_var
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    y = (wide - mean.view(shape)) * scale.view(shape)
    return (y if bias is None else y + bias.view(shape)).to(x.dtype)


def grid_sample_gather(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)`` as gathers:
    torch_xla 2.9 has no lowering of ``grid_sampler_2d`` (it ran on the host, ``aten::grid_sampler_2d``,
    for every cached crop and every step of ``--affine``). Each output pixel is the four input pixels
    around its source point, weighted bilinearly; border padding clamps the source point into the image."""
    n, c, h, w = x.shape
    out_h, out_w = grid.shape[1:3]
    # align_corners=False: -1 and 1 are the outer edges of the corner pixels
    gx = ((grid[..., 0] + 1) * w - 1).div(2).clamp(0, w - 1)
    gy = ((grid[..., 1] + 1) * h - 1).div(2).clamp(0, h - 1)
    x0, y0 = gx.floor(), gy.floor()
    wx, wy = (gx - x0).unsqueeze(1), (gy - y0).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = x.reshape(n, c, h * w)

    def at(yi, xi):
        index = (yi * w + xi).reshape(n, 1, out_h * out_w).expand(n, c, out_h * out_w)
        return flat.gather(2, index).reshape(n, c, out_h, out_w)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


_SAMPLE_ARGS = tuple(inspect.signature(F.grid_sample).parameters)


class BatchLocalOps(TorchFunctionMode):
    """Within it, ``F.batch_norm`` is ``batch_norm_ops``, a grouped ``F.conv2d`` is ``depthwise_taps``
    (one input channel per group, one output channel per group) or ``grouped_conv``, and the augmentations'
    ``F.grid_sample`` (bilinear, border) is ``grid_sample_gather``; every other call, dense convolutions
    among them, is the call itself. The model, its parameters and checkpoints are unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.grid_sample:
            a = {"mode": "bilinear", "padding_mode": "zeros", "align_corners": None,
                 **dict(zip(_SAMPLE_ARGS, args)), **kwargs}
            if (a["mode"], a["padding_mode"], a["align_corners"]) == ("bilinear", "border", False):
                return grid_sample_gather(a["input"], a["grid"])
        if func is F.batch_norm:
            a = {**dict(zip(_BN_ARGS, args)), **kwargs}
            return batch_norm_ops(a.pop("input"), **a)
        if func is F.conv2d:
            a = {**dict(zip(_CONV_ARGS, args)), **kwargs}
            x, groups, weight = a.pop("input"), a.pop("groups", 1), a["weight"]
            if groups > 1 and weight.shape[1] == 1 and weight.shape[0] == groups:
                return depthwise_taps(x, **a)
            if groups > 1:
                return grouped_conv(x, **a, groups=groups)
        return func(*args, **kwargs)
