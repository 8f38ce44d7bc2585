"""petalnet.accel: device preprocessing (resize path; the row-wise fast path is in
test_augment.py), precision choice and the glibc allocator setting."""
import ctypes
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from petalnet import accel
from petalnet.accel import DevicePreprocess, keep_freed_memory, resolve_precision
from petalnet.errors import PetalnetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _pil_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pillow's antialiased bilinear resize of a uint8 NCHW batch, as float NCHW (an independent reference)."""
    out = [np.asarray(Image.fromarray(im.permute(1, 2, 0).numpy()).resize((size, size), Image.BILINEAR))
           for im in x]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return (x / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_resize_path_normalises_like_pil_then_mean_std():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=g)
    prep = DevicePreprocess(torch.device("cpu"), MEAN, STD, 48)
    got = prep(x)
    assert got.shape == (4, 3, 48, 48) and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    want = _normalised(_pil_resize(x, 48))
    # Pillow rounds to uint8: at most one grey level apart
    assert (got - want).abs().max() <= 1.0 / 255 / min(STD) + 1e-4
    # each channel with its own mean and std: a flat colour stays that colour exactly
    flat = torch.tensor([10, 128, 250], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 40, 40).contiguous()
    out = prep(flat)
    want_flat = _normalised(torch.tensor([10.0, 128.0, 250.0]).view(1, 3, 1, 1))
    assert torch.allclose(out, want_flat.expand_as(out), atol=1e-5)


def test_resize_path_flips_exactly_the_coins_and_can_hand_out_nchw():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8, generator=g)
    prep = DevicePreprocess(torch.device("cpu"), MEAN, STD, 32)
    flips = torch.tensor([True, False, False, True, True])
    plain, flipped = prep(x), prep(x, flips)
    for i, f in enumerate(flips.tolist()):   # a bilinear resize is mirror-symmetric
        assert torch.allclose(flipped[i], plain[i].flip(-1) if f else plain[i], atol=1e-5), i
    assert not torch.allclose(flipped[0], plain[0], atol=1e-3)   # the flip is visible
    assert torch.equal(x, torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8,
                                        generator=torch.Generator().manual_seed(2)))   # input left as it was
    nchw = DevicePreprocess(torch.device("cpu"), MEAN, STD, 32, channels_last=False)(x, flips)
    assert nchw.is_contiguous() and not nchw.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(nchw, flipped, atol=1e-6)
    # the same-size fast path also hands out NCHW when asked
    same = DevicePreprocess(torch.device("cpu"), MEAN, STD, 40, channels_last=False)(x)
    assert same.is_contiguous() and torch.allclose(same, _normalised(x.float()), atol=1e-5)


@pytest.mark.parametrize("given, want", [("32", "32-true"), ("32-true", "32-true"), ("bf16", "bf16-mixed"),
                                         ("bf16-mixed", "bf16-mixed"), ("16", "16-mixed"),
                                         ("16-mixed", "16-mixed")])
def test_resolve_precision_explicit(given, want):
    for accelerator in ("cpu", "gpu", "auto"):   # an explicit choice wins everywhere
        assert resolve_precision(given, accelerator) == want


def test_resolve_precision_rejects_unknown_names():
    for bad in ("64", "bf32", "fp16", ""):
        with pytest.raises(PetalnetError, match=f"--precision {bad}: choose auto, 32, bf16-mixed, 16-mixed"):
            resolve_precision(bad, "cpu")


def test_resolve_precision_auto_follows_the_hardware(monkeypatch):
    for bf16 in (True, False):
        monkeypatch.setattr(accel, "cpu_supports_bf16", lambda bf16=bf16: bf16)
        assert resolve_precision("auto", "cpu") == ("bf16-mixed" if bf16 else "32-true")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert resolve_precision("auto", "auto") == ("bf16-mixed" if bf16 else "32-true")   # no GPU: the CPU rule
    assert resolve_precision("auto", "tpu") == "bf16-mixed"
    for bf16 in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert resolve_precision("auto", "gpu") == resolve_precision("auto", "cuda") == \
            ("bf16-mixed" if bf16 else "16-mixed")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_precision("auto", "auto") == ("bf16-mixed" if bf16 else "16-mixed")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc malloc only")
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):   # glibc < 2.33
        pytest.skip("mallinfo2 needs glibc 2.33")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _mmapped(libc, mib: int) -> bool:
    """Whether glibc serves a block of ``mib`` MiB with its own mmap (vs from the heap)."""
    before = libc.mallinfo2().hblks
    p = libc.malloc(mib << 20)
    assert p
    try:
        return libc.mallinfo2().hblks == before + 1
    finally:
        libc.free(p)


def test_keep_freed_memory_fixes_the_mmap_threshold_at_32_mib_once():
    """In a fresh process: the heap of this one may already hold freed blocks (earlier tests set the
    trim threshold), which glibc then reuses whatever the mmap threshold says."""
    _glibc()
    code = """
import sys; sys.path.insert(0, %r)
from tests.test_accel import _glibc, _mmapped
from petalnet.accel import keep_freed_memory
libc = _glibc()
assert _mmapped(libc, 16)
assert keep_freed_memory() is True
assert not _mmapped(libc, 16) and not _mmapped(libc, 31) and _mmapped(libc, 33)
assert keep_freed_memory() is True   # idempotent: same answer, same setting
assert not _mmapped(libc, 16) and _mmapped(libc, 33)
""" % ROOT
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_keep_freed_memory_leaves_other_allocators_alone(monkeypatch):
    monkeypatch.setattr(accel, "_ALLOCATOR_TUNED", False)
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    called = []
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: called.append(a))
    assert keep_freed_memory() is False and not called
