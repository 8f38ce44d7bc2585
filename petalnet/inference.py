"""CPU inference at this hardware's pace: batch norm folded into the convolutions, weights cast to bf16
once (autocast casts them again at every call), batches run in chunks whose activations stay in cache.
tf_efficientnet_lite0 at 192 px on the project's 2-core CPU: ~1.7x the forward of eager autocast."""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

try:   # timm's norm + activation layer: batch norm, then dropout and activation, which stay
    from timm.layers import BatchNormAct2d
except ImportError:   # pragma: no cover - timm is a dependency; guards a rename
    BatchNormAct2d = ()


def conv_bn_pairs(model: nn.Module, image_size: int) -> list[tuple[str, str]]:
    """(conv name, batch-norm name) for each eval-mode 2-d batch norm that reads a convolution's output
    directly, seen in one forward of a small batch (module order alone does not say what feeds what)."""
    names = {m: n for n, m in model.named_modules()}
    produced, pairs = {}, []

    def conv_out(mod, _inputs, out):
        produced[id(out)] = (mod, out)   # the tensor is kept alive, so its id cannot be reused

    def bn_in(mod, inputs):
        conv, _ = produced.get(id(inputs[0]), (None, None))
        if conv is not None:
            pairs.append((names[conv], names[mod]))

    hooks = [m.register_forward_hook(conv_out) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(bn_in) for m in model.modules()
              if type(m) is nn.BatchNorm2d or isinstance(m, BatchNormAct2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(pairs))   # a module called twice pairs once


def fold_batch_norm(model: nn.Module, image_size: int) -> tuple[nn.Module, int]:
    """An eval copy of ``model`` with batch norms folded into the convolutions that feed them, and how
    many were folded. The fold is checked on a random batch: should a convolution's output also feed
    something else, the outputs differ and the unfolded copy is returned (with a warning)."""
    training = model.training
    model.eval()
    try:
        return _fold(model, image_size)
    finally:
        model.train(training)


def _fold(model: nn.Module, image_size: int) -> tuple[nn.Module, int]:
    folded = copy.deepcopy(model)
    pairs = conv_bn_pairs(model, image_size)
    if not pairs:
        return folded, 0
    for conv_name, bn_name in pairs:
        bn = folded.get_submodule(bn_name)
        rest = nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity()
        _set(folded, conv_name, fuse_conv_bn_eval(folded.get_submodule(conv_name), bn))
        _set(folded, bn_name, rest)
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = model(x), folded(x)
    if not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item()):
        warnings.warn(f"{type(model).__name__}: batch norm not folded (outputs changed by "
                      f"{(got - want).abs().max().item():.3g}); CPU inference runs the model as it is", stacklevel=3)
        return copy.deepcopy(model), 0
    return folded, len(pairs)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def prepare_for_cpu(model: nn.Module, image_size: int, bf16: bool) -> tuple[nn.Module, int]:
    """(a frozen eval copy of ``model`` with batch norm folded, weights in bf16 where ``bf16`` (the CPU
    runs it: AMX / AVX512-BF16) else fp32, channels-last; how many batch norms were folded)."""
    folded, count = fold_batch_norm(model, image_size)
    dtype = torch.bfloat16 if bf16 else torch.float32
    return folded.to(dtype, memory_format=torch.channels_last).requires_grad_(False).eval(), count


CHUNK = 16   # images per call: 8-16 were fastest here; 64 ran ~25 % slower (activations leave the cache)


def chunked(fn, x: torch.Tensor, chunk: int | None = CHUNK) -> torch.Tensor:
    """``fn`` over ``x`` ``chunk`` images at a time (all at once when None), outputs concatenated."""
    return torch.cat([fn(part) for part in x.split(chunk or len(x))])


def forward_float32(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` in float32, whatever autocast the caller runs under."""
    with torch.autocast(x.device.type, enabled=False):
        return fn(x.float())


class CPUInferenceModel:
    """``model`` prepared for CPU inference (``prepare_for_cpu``); called on a float batch, returns fp32
    logits."""

    def __init__(self, model: nn.Module, image_size: int, bf16: bool, chunk: int = CHUNK):
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.chunk = chunk
        self.model, self.folded = prepare_for_cpu(model, image_size, bf16)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            x = x.to(self.dtype, memory_format=torch.channels_last)
            return chunked(self.model, x, self.chunk).float()
