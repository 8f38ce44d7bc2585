"""PyTorch/XLA: TPU cores (a Kaggle or Cloud TPU VM, a pod) and XLA's CPU backend (``PJRT_DEVICE=CPU``).

Data-parallel over every XLA device in one process per host, through torch_xla's SPMD mode (its
documented way to scale): a mesh over all devices with a ``data`` axis, each batch uploaded split along
it (``BatchSharding``), parameters and optimizer state replicated, and the gradient all-reduce inserted
by XLA's partitioner. The program is the one-device program; the mesh decides the rest, so 1 device, the
8 cores of a TPU v3-8 and the hosts of a pod run the same code. Lightning Fabric drives the one process
(``SingleDeviceXLAStrategy`` on the SPMD virtual device); its multi-process ``XLAStrategy`` is not used
(one process per core, collectives written by hand; it never ran here, and torch_xla cannot run it on
its CPU backend). ``topology`` tells the engine how many replicas step (the LR's and the global batch's
count) and which share of the records this host reads.

Everything petalnet does differently on XLA that needs ``torch_xla`` is here; the plan
(``plan.make_plan``) and the batch sources (``batches.build_sources``) call into it.

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
DATA_AXIS = "data"


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
            return 1   # Fabric's view: one process on the SPMD virtual device

        @staticmethod
        def is_available() -> bool:
            return True

    return PJRTCPUAccelerator()


def start_spmd(devices: int | None):
    """torch_xla's runtime in SPMD mode over ``devices`` XLA devices (None: every one); the runtime module.
    On the CPU backend the count is the runtime's ``CPU_NUM_DEVICES``, set here before it starts; a TPU
    has the devices it has (``TPU_VISIBLE_CHIPS`` and its bounds restrict them before start)."""
    if cpu_backend() and devices is not None:
        os.environ["CPU_NUM_DEVICES"] = str(devices)
    # XLA's C++ warnings (one per compiled graph under SPMD: "GSPMD sharding propagation is going to be
    # deprecated") would interleave with the run's lines; errors still show
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    xr = _require_torch_xla()
    xr.use_spmd()
    count = xr.global_runtime_device_count()
    if devices is not None and devices != count:
        where = "this process's XLA runtime has already started with" if cpu_backend() else "this TPU host has"
        raise OptionError(f"--devices {devices}: {where} {count} XLA devices (on a TPU, fewer chips are chosen "
                          "with TPU_VISIBLE_CHIPS before the run starts; default: every device)")
    return xr


def make_fabric(devices: int | None, num_nodes: int):
    """Fabric for this host's process on the SPMD virtual device (``start_spmd``). Fabric's XLA precision is
    32-true: bf16 is autocast in the step (``plan.compiled``), since Fabric's bf16-true sets ``XLA_USE_BF16``,
    which torch_xla 2.8+ no longer reads."""
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import SingleDeviceXLAStrategy
    if num_nodes != 1:
        raise OptionError(f"--num-nodes {num_nodes}: on TPUs the hosts are the runtime's (a pod runs the same "
                          "command on every host and the mesh spans them all); --num-nodes is for GPUs")
    start_spmd(devices)
    import torch_xla
    accelerator = _cpu_backend_shim() if cpu_backend() else "tpu"
    try:
        return Fabric(accelerator=accelerator, devices=1, precision="32-true",
                      strategy=SingleDeviceXLAStrategy(device=torch_xla.device()))
    except (RuntimeError, ValueError) as e:
        raise OptionError(f"--accelerator tpu: not usable here "
                          f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None


def topology() -> Topology:
    """The SPMD layout of the running XLA runtime: every device a replica, each host one shard."""
    import torch_xla.runtime as xr
    from petalnet.parallel import Topology
    devices, hosts, host = xr.global_runtime_device_count(), xr.process_count(), xr.process_index()
    local = xr.addressable_runtime_device_count()
    return Topology(replicas=devices, shards=hosts, shard=host, per_shard=local, writer=host == 0,
                    mesh={"axes": [DATA_AXIS], "shape": [devices], "devices": devices,
                          "hosts": hosts, "devices_per_host": local, "batch_axis": DATA_AXIS})


def data_mesh():
    """The mesh over every XLA device, one ``data`` axis (torch_xla 2.9 cannot shard a 1-d tensor, the
    labels, over one axis of an (n, 1) mesh)."""
    import numpy as np
    import torch_xla.distributed.spmd as xs
    import torch_xla.runtime as xr
    n = xr.global_runtime_device_count()
    return xs.Mesh(np.arange(n), (n,), (DATA_AXIS,))


def replicated(t: torch.Tensor) -> torch.Tensor:
    """``t`` marked replicated over every device of the mesh (its sharding as a step's outputs have it)."""
    import torch_xla.distributed.spmd as xs
    xs.mark_sharding(t, data_mesh(), (None,) * t.dim())
    return t


class BatchSharding:
    """Every tensor of a batch split along dimension 0 over the mesh's ``data`` axis, replicated along the
    rest: torch_xla's ``ShardingSpec`` for the tensor's rank, which ``send_cpu_data_to_device`` (and so
    ``MpDeviceLoader``) asks for by ``xla_spec(tensor)``. On a pod each host uploads its own share of the
    global batch (``minibatch``)."""

    def __init__(self):
        import torch_xla.runtime as xr
        self.mesh = data_mesh()
        self.minibatch = xr.process_count() > 1
        self._specs = {}

    def xla_spec(self, t: torch.Tensor):
        if t.dim() == 0:
            return None
        if t.dim() not in self._specs:
            import torch_xla.distributed.spmd as xs
            self._specs[t.dim()] = xs.ShardingSpec(self.mesh, (DATA_AXIS,) + (None,) * (t.dim() - 1),
                                                   minibatch=self.minibatch)
        return self._specs[t.dim()].xla_spec(t)


class _LoaderView:
    """A loader seen through a wrapper: the same ``len()`` and ``sampler`` (the batch sources set epochs on it)."""

    def __init__(self, loader):
        self.loader = loader

    @property
    def sampler(self):
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)


def uploader(device: torch.device):
    """(an iterable of host batches) -> an iterator of the same batches on the mesh, through torch_xla's
    ``MpDeviceLoader``: every tensor split along the data axis as it is uploaded (``BatchSharding``; on a
    pod from this host's share), a thread uploading the next batches while the devices run the current
    step, and each batch taken marking a step (the lazily traced graph before it is cut and run)."""
    sharding = BatchSharding()

    def upload(batches):
        from torch_xla.distributed.parallel_loader import MpDeviceLoader
        return iter(MpDeviceLoader(batches, device, input_sharding=sharding))

    return upload


class DeviceLoader(_LoaderView):
    """``loader``'s batches on the mesh (``uploader``), with the loader's length and sampler."""

    def __init__(self, loader, upload):
        super().__init__(loader)
        self.upload = upload

    def __iter__(self):
        return self.upload(self.loader)


class Padded(_LoaderView):
    """Batches padded to ``batch_size`` (one compiled graph; a batch the mesh splits evenly): the last batch
    gets black images labelled ``PAD_LABEL``, which the loss and the confusion matrix skip, so every record
    counts once; further tensors of the batch (dataset indices) are padded with zeros."""

    def __init__(self, loader, batch_size: int):
        super().__init__(loader)
        self.batch_size = batch_size

    def __iter__(self):
        return padded(self.loader, self.batch_size)


def padded(batches, size: int):
    """``batches`` of (images or a list of views, labels, further tensors...), the last padded to ``size``
    rows as ``Padded`` says."""
    for images, labels, *rest in batches:
        short = size - len(labels)
        if short:
            images = [_pad(v, short, 0) for v in images] if isinstance(images, list) else _pad(images, short, 0)
            labels, rest = _pad(labels, short, PAD_LABEL), [_pad(t, short, 0) for t in rest]
        yield (images, labels, *rest)


def _pad(t: torch.Tensor, short: int, value) -> torch.Tensor:
    return torch.cat([t, t.new_full((short, *t.shape[1:]), value)])


class Autocast(torch.nn.Module):
    """``module``'s forward under XLA's bf16 autocast (matmuls and convolutions in bf16, the TPU's
    MXU type; weights, optimizer state and reductions stay fp32)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        with torch.autocast("xla", dtype=torch.bfloat16):
            return self.module(x)
