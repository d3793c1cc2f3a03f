"""How a run may shard its model over its processes. Kept free of torch so that the CLI's
help and the API's schemas name the choices without loading it."""

from __future__ import annotations

from typing import Literal, get_args

Sharding = Literal["fsdp"]  # FSDP2's `fully_shard` (`tune.sharded`)
SHARDINGS: tuple[str, ...] = get_args(Sharding)
