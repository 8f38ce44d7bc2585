"""How data-parallel training is laid out: replicas, the shares of the records, who writes.

Two layouts share it: DDP (one process per device, ``accel.make_fabric``) and XLA's SPMD (one process
per host driving all its devices, ``xla.topology``). The engine reads this, not the strategy: the LR
rules and the global batch count replicas, the loaders split the records into shards.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Topology:
    """``replicas`` step in lockstep on one global batch of batch size x replicas (the count the LR rules
    scale by); the records are split into ``shards``, one per process (DDP ranks; SPMD hosts), this process
    reading shard ``shard`` and loading the batches of ``per_shard`` replicas (DDP: 1; SPMD: the host's
    devices); ``writer``: this process writes the run folder; ``mesh``: the SPMD mesh as config.json
    records it (None under DDP)."""
    replicas: int = 1
    shards: int = 1
    shard: int = 0
    per_shard: int = 1
    writer: bool = True
    mesh: dict | None = None

    def record(self) -> dict:
        """config.json's ``resolved`` entries."""
        return {"replicas": self.replicas, "data_shards": self.shards, "mesh": self.mesh}
