"""PyTorch/XLA: TPU cores (a Kaggle TPU VM) and XLA's CPU backend (``PJRT_DEVICE=CPU``), through Lightning
Fabric. Everything petalnet does differently on XLA that needs ``torch_xla`` is here; the plan
(``plan.make_plan``'s XLA branch) and the batch sources (``batches.build_sources``) call into it.

Off a TPU, Fabric cannot count XLA devices: ``XLAAccelerator.auto_device_count`` asks
``torch_xla._internal.tpu.num_available_devices()``, which queries the TPU VM's metadata server (it
answers "not available", or raises offline). Only when ``PJRT_DEVICE=CPU`` is set, ``_cpu_backend_shim``
makes that function answer the PJRT runtime's count and gives Fabric an accelerator that is available;
on a TPU nothing is patched.
"""
from __future__ import annotations

import os

import torch

from petalnet.errors import OptionError

PAD_LABEL = -100   # F.nll_loss's default ignore_index; metrics.confusion_matrix skips negative labels


def cpu_backend() -> bool:
    """Whether XLA runs on its CPU backend (``PJRT_DEVICE=CPU``): the graphs a TPU runs, compiled for the CPU."""
    return os.environ.get("PJRT_DEVICE", "").upper() == "CPU"


def _require_torch_xla():
    try:
        import torch_xla  # noqa: F401
        import torch_xla.runtime as xr
    except ImportError as e:
        raise OptionError(f"--accelerator tpu needs torch_xla ({e}); Kaggle's TPU VM image has it, elsewhere "
                          "`pip install torch~=2.9.0 torch-xla~=2.9.0` (PJRT_DEVICE=CPU runs it on the CPU)") from None
    return xr


def _cpu_backend_shim():
    """Fabric's XLA accelerator, counting devices through the PJRT runtime (PJRT_DEVICE=CPU only)."""
    from lightning_fabric.accelerators.xla import XLAAccelerator
    from torch_xla._internal import tpu
    xr = _require_torch_xla()
    tpu.num_available_devices = xr.global_runtime_device_count   # Fabric's device check calls it

    class PJRTCPUAccelerator(XLAAccelerator):
        @staticmethod
        def auto_device_count() -> int:
            return xr.global_runtime_device_count()

        @staticmethod
        def is_available() -> bool:
            return True

    return PJRTCPUAccelerator()


def make_fabric(devices, num_nodes: int):
    """Fabric on XLA devices: one device through ``SingleDeviceXLAStrategy``, N (TPU cores) through
    ``XLAStrategy`` (one process per core, torch_xla's launcher). Fabric's XLA precision is 32-true:
    bf16 is autocast in the step (``plan.compiled``), since Fabric's bf16-true sets ``XLA_USE_BF16``,
    which torch_xla 2.8+ no longer reads."""
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import SingleDeviceXLAStrategy
    _require_torch_xla()
    if num_nodes != 1:
        raise OptionError(f"--num-nodes {num_nodes}: on TPUs one host at a time (a TPU pod runs the same command "
                          "on every host under torch_xla's launcher, not supported here)")
    if cpu_backend():
        if devices not in (1, "1", "auto"):
            # torch_xla 2.9's launcher starts one process for the CPU backend whatever nprocs says
            # (_internal/pjrt.run_multiprocess: TPU, CUDA and NEURON count local processes, else 1), its
            # CPU_NUM_DEVICES=N devices run as N threads of it, and their collectives never meet: tried with
            # a bare xmp.spawn and xm.all_reduce, XLA's rendezvous waits for op_id 0 in one thread and 1 in
            # the other and aborts the process after 10 s; data-parallel XLA needs TPU cores
            raise OptionError(f"--devices {devices}: XLA's CPU backend (PJRT_DEVICE=CPU) trains on one device "
                              "(torch_xla cannot run collectives between its CPU devices); several need TPU cores")
        accelerator = _cpu_backend_shim()
    else:
        accelerator = "tpu"
    if devices in (1, "1"):
        import torch_xla
        strategy = SingleDeviceXLAStrategy(device=torch_xla.device())
    else:
        strategy = "xla"
    try:
        return Fabric(accelerator=accelerator, devices=devices, strategy=strategy, precision="32-true")
    except (RuntimeError, ValueError) as e:
        raise OptionError(f"--accelerator tpu --devices {devices}: not usable here "
                          f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None


class _LoaderView:
    """A loader seen through a wrapper: the same ``len()`` and ``sampler`` (the batch sources set epochs on it)."""

    def __init__(self, loader):
        self.loader = loader

    @property
    def sampler(self):
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)


class DeviceLoader(_LoaderView):
    """``loader``'s batches on the XLA device through torch_xla's ``MpDeviceLoader``: a thread uploads the
    next batches while the device runs the current step, and each batch taken marks a step (the
    lazily traced graph before it is cut and run)."""

    def __init__(self, loader, device: torch.device):
        super().__init__(loader)
        self.device = device

    def __iter__(self):
        from torch_xla.distributed.parallel_loader import MpDeviceLoader
        return iter(MpDeviceLoader(self.loader, self.device))


class Padded(_LoaderView):
    """Evaluation batches padded to ``batch_size`` (one compiled evaluation graph): the last batch gets
    black images labelled ``PAD_LABEL``, which the loss and the confusion matrix skip, so every record
    counts once."""

    def __init__(self, loader, batch_size: int):
        super().__init__(loader)
        self.batch_size = batch_size

    def __iter__(self):
        for images, labels in self.loader:
            short = self.batch_size - len(labels)
            if short:
                images = torch.cat([images, images.new_zeros((short, *images.shape[1:]))])
                labels = torch.cat([labels, labels.new_full((short,), PAD_LABEL)])
            yield images, labels


class Autocast(torch.nn.Module):
    """``module``'s forward under XLA's bf16 autocast (matmuls and convolutions in bf16, the TPU's
    MXU type; weights, optimizer state and reductions stay fp32)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        with torch.autocast("xla", dtype=torch.bfloat16):
            return self.module(x)
