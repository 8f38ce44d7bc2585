"""Lightning Fabric set-up: accelerator, devices, nodes, precision, and moving uint8 batches onto the device."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from petalnet import augment
from petalnet.options import PRECISIONS, TRAIN_PRECISIONS
from petalnet.errors import OptionError, PetalnetError
from petalnet.parallel import Topology


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed tensor memory for reuse (Linux; once per process). By default it
    maps blocks over a moving threshold with mmap and unmaps them when freed, and trims the heap's top,
    so some runs page-fault every step's activations in anew: measured here ~30k page faults and
    ~70 ms of kernel time per Lite0 training step (batch 32), a third of the step, in runs that fell
    into that mode and none in others. Blocks up to 32 MiB then come from the heap, which keeps up to
    1 GiB free (the peak RSS barely moves). True where set; a replaced malloc (jemalloc, tcmalloc)
    ignores it."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    _ALLOCATOR_TUNED = bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return _ALLOCATOR_TUNED


def device_type(accelerator: str = "auto") -> str:
    """The torch device type ``--accelerator`` ends up on ('cpu', 'cuda', 'xla', 'mps'), without starting Fabric."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "tpu":
        return "xla"
    if accelerator in ("cpu", "mps"):
        return accelerator
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str, accelerator: str) -> str:
    """'auto': bf16 autocast where the hardware runs it fast (recent GPUs, CPUs with AVX512-BF16/AMX), else 32."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise PetalnetError(f"--precision {precision}: choose {', '.join(TRAIN_PRECISIONS)}")
        return PRECISIONS[precision]
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator == "tpu":
        return "bf16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def make_fabric(accelerator: str = "auto", devices: int | str | None = None, num_nodes: int = 1,
                precision: str = "auto"):
    """Fabric for ``--accelerator``: ``devices`` processes (DDP when several; None: 1) on CPUs and GPUs,
    every XLA device of this host in one process on XLA (``xla.make_fabric``; ``devices``: that many)."""
    # imported here: Fabric pulls in torch._dynamo (~2 s), which predict and serve do not need
    try:   # the `lightning` package bundles Fabric; `lightning-fabric` is the standalone one
        from lightning.fabric import Fabric
    except ImportError:  # pragma: no cover - whichever is installed
        from lightning_fabric import Fabric
    quiet_lightning()
    if accelerator == "tpu":   # TPU cores, or XLA's CPU backend (PJRT_DEVICE=CPU)
        from petalnet import xla
        return xla.make_fabric(devices, num_nodes)   # its precision: plan.compiled
    devices = 1 if devices is None else devices
    multi = num_nodes > 1 or (devices not in (1, "1", "auto"))
    try:
        return Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                      precision=resolve_precision(precision, accelerator), strategy="ddp" if multi else "auto")
    except (RuntimeError, ImportError, ValueError) as e:   # e.g. "No supported gpu backend found!"
        raise OptionError(f"--accelerator {accelerator} --devices {devices} --num-nodes {num_nodes}: not usable "
                          f"here ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None


def topology(fabric) -> Topology:
    """How ``fabric``'s run is laid out: SPMD over the XLA devices, else one replica and shard per process."""
    if fabric.device.type == "xla":
        from petalnet import xla
        return xla.topology()
    return Topology(replicas=fabric.world_size, shards=fabric.world_size, shard=fabric.global_rank,
                    writer=fabric.global_rank == 0)


def batch_local_ops(fabric):
    """What the run's model calls run under: on XLA ``spmd_ops.BatchLocalOps`` (batch norm and grouped
    convolutions the SPMD partitioner keeps split along the batch, instead of computing the whole batch on
    every device: measured 12x, spmd_ops' docstring); elsewhere nothing. On one XLA device too: one program
    for 1 device, 8 and a pod, so 8 devices repeat 1 device's numbers to the partitioner's rounding (with
    torch's kernels on one device they drifted 1.1e-4 apart in two epochs, measured), and XLA's CPU backend
    runs the taps 4x faster than its grouped kernel."""
    if fabric.device.type == "xla":
        from petalnet.spmd_ops import BatchLocalOps
        return BatchLocalOps()
    return contextlib.nullcontext()


def quiet_lightning() -> None:
    """Lightning logs info lines ("Using bfloat16 Automatic Mixed Precision (AMP)") to stderr from its own
    handler, ahead of whatever petalnet says next (an error line too); the run's first line states the
    precision. Its warnings still show."""
    import logging
    for name in ("lightning_fabric", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def decode_on_device(encoded: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A list of encoded JPEGs (1-D uint8 tensors) -> uint8 NCHW batch, decoded in one batched nvJPEG
    call on a CUDA device (on the CPU, one after another with libjpeg-turbo)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    if device.type == "cuda":
        # nvJPEG's hardware engine ignores stream order and can write into blocks the caching allocator
        # just freed while queued kernels still read them (NaNs in training): drain the stream first
        # (pytorch/vision#9606, meta-pytorch/torchcodec#1634).
        torch.cuda.current_stream(device).synchronize()
    try:
        images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:
        raise PetalnetError(f"a JPEG in this batch cannot be decoded on {device} ({str(e).splitlines()[0][:200]}); "
                            "`petalnet inspect --verify DATA` names the record") from None
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise PetalnetError(f"images of different sizes in one batch ({sorted(shapes)[:3]}): "
                            "`petalnet inspect --verify DATA` names the records")
    return torch.stack(images)


def resize_matrix(n: int, m: int) -> torch.Tensor:
    """(m, n) weights of torch's antialiased bilinear resize of a length-n axis to m: the resize of the
    identity along that axis (the 2-d resize is separable)."""
    eye = torch.eye(n).view(1, 1, n, n)
    return F.interpolate(eye, size=(n, m), mode="bilinear", antialias=True, align_corners=False)[0, 0].T.contiguous()


class DevicePreprocess:
    """uint8 NCHW batch on the host -> normalised float batch on the device (timm's PrefetchLoader idea):
    the copy is a quarter of float32's, and resize, flip and normalise run on the accelerator."""

    def __init__(self, device: torch.device, mean, std, image_size: int, channels_last: bool = True):
        self.device, self.size, self.channels_last = device, image_size, channels_last
        # (x / 255 - mean) / std as one fused multiply-add: x * scale + shift
        self.scale = 1 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)
        self.shift = -torch.tensor(mean, device=device).view(1, 3, 1, 1) / torch.tensor(std, device=device).view(1, 3, 1, 1)
        self._rows = None   # scale and shift repeated along an NHWC row (``_normalise_rows``)
        self._weights = {}  # XLA: (input side) -> the resize's weights on the device (``_resize``)

    def __call__(self, images: torch.Tensor | list[torch.Tensor], flip: torch.Tensor | None = None,
                 aug=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``aug``: an ``augment.AugmentConfig`` applied per sample with ``generator`` (training only)."""
        x = decode_on_device(images, self.device) if isinstance(images, list) else \
            images.to(self.device, non_blocking=True)
        if flip is not None:   # on uint8, a quarter of float's bytes
            flip = flip.to(self.device, non_blocking=True)
            if x.device.type == "cpu":   # copies only the flipped half
                x = x.clone()
                x[flip] = x[flip].flip(-1)
            else:   # no boolean indexing: it waits for the device (nonzero) and stalls the queue
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if (aug is None or not (aug.geometric or aug.color)) and x.shape[-2:] == (self.size, self.size) \
                and x.permute(0, 2, 3, 1).is_contiguous():
            x = self._normalise_rows(x)   # nothing to resample: one pass over the rows
        else:
            x = x.float()
            if aug is not None and aug.geometric:   # one resampling does the geometry and the resize
                x = augment.geometric(x, aug, self.size, generator)
            elif x.shape[-1] != self.size or x.shape[-2] != self.size:
                x = self._resize(x)
            if aug is not None and aug.color > 0:
                x = augment.color(x, aug.color, generator)
            x = torch.addcmul(self.shift, x, self.scale)   # on a contiguous tensor: converting layout first is slower
        if aug is not None and aug.cutout > 0:
            x = augment.cutout(x, aug.cutout, generator)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Bilinear, antialiased, to the model's size. On XLA as two matrix products with the same weights
        (torch_xla 2.9 has no lowering of the antialiased resize: it ran on the host, splitting the step's
        graph and compiling new ones batch after batch, measured); elsewhere torch's kernel."""
        if x.device.type != "xla":
            return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        for n in x.shape[-2:]:   # made and uploaded once per input size, not per batch
            if n not in self._weights:
                self._weights[n] = resize_matrix(n, self.size).to(x.device)
        return torch.einsum("oh,bchw,pw->bcop", self._weights[x.shape[-2]], x, self._weights[x.shape[-1]])

    def _normalise_rows(self, x: torch.Tensor) -> torch.Tensor:
        """A channels-last uint8 batch normalised as rows of H x (W * 3) values, with the per-channel terms
        repeated along a row: the same numbers as above, ~5x faster on CPU (a broadcast over an innermost
        dimension of 3 does not vectorise). Returns channels-last."""
        b, c, h, w = x.shape
        if self._rows is None or self._rows[0].numel() != w * c:
            self._rows = (self.scale.view(c).repeat(w), self.shift.view(c).repeat(w))
        rows = x.permute(0, 2, 3, 1).reshape(b, h, w * c).float()   # a view of NHWC memory, then one copy
        return torch.addcmul(self._rows[1], rows, self._rows[0], out=rows).view(b, h, w, c).permute(0, 3, 1, 2)
