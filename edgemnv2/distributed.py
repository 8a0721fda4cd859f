"""More than one process: torchrun starts them, torch.distributed connects them.

`torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT ...] -m edgemnv2 validate ...`
sets RANK and WORLD_SIZE in each process; `world()` joins the group (gloo on CPU, NCCL for CUDA
training) and says which shard is this process's. Without torchrun it is a world of one, and
nothing here imports torch.distributed.
"""

import os
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence) -> list:
        """This rank's share: items rank, rank + size, ... (whole batches, so every image sits in the
        same batch as in a one-process run and gets the same numbers from every runtime)."""
        return list(items[self.rank :: self.size])

    def gather(self, value: Any) -> list | None:
        """Every rank's `value`, in rank order, on rank 0; None elsewhere."""
        if not self.is_distributed:
            return [value]
        import torch.distributed as dist

        gathered = [None] * self.size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.is_distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def quiet_rank() -> bool:
    """Ranks other than 0 print nothing but errors (one progress bar, one table)."""
    return int(os.environ.get("RANK", "0")) != 0


def world(cuda: bool = False) -> World:
    """Join the torchrun group (once per process); a world of one without torchrun."""
    if not launched_by_torchrun():
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        use_nccl = cuda and torch.cuda.is_available()
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# When one rank stops on bad input, the others must not call its absence an internal error: at the
# collective they wait in, gloo says "Connection closed by peer", and torchrun SIGTERMs the rest.
# The stopping rank writes why in the store every rank of the group shares (the rendezvous', which
# outlives the workers), before it exits; a rank whose collective breaks, or that torchrun
# terminates, reads it there and exits with that rank's code, silently (the line is printed once).


def _shared_store():
    """The key-value store of this torchrun's group; None outside a joined group."""
    if not launched_by_torchrun():
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def _failure_key() -> str:  # one per attempt: a restarted group (torchrun --max-restarts) starts clean
    return f"edgemnv2/failure/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def report_failure(code: int, message: str) -> bool:
    """Under torchrun: tell the other ranks this rank stops with `code` because of `message` (the first
    report stands). -> whether this rank prints its message: not when another rank already reported
    the very same one (every rank met the same bad file: one line, not one per rank)."""
    import json

    store = _shared_store()
    if store is None:
        return True
    import torch.distributed as dist

    mine = {"rank": dist.get_rank(), "code": int(code), "message": str(message)}
    try:
        first = json.loads(store.compare_set(_failure_key(), "", json.dumps(mine)))
    except Exception:  # the store is gone too: say it here
        return True
    return first["rank"] == mine["rank"] or first["message"] != mine["message"]


def peer_failure() -> dict | None:
    """{rank, code, message} of another rank that stopped on its own error (under torchrun); None if none did."""
    import json

    store = _shared_store()
    if store is None:
        return None
    import torch.distributed as dist

    try:
        if not store.check([_failure_key()]):
            return None
        first = json.loads(store.get(_failure_key()))
    except Exception:
        return None
    return first if first.get("rank") != dist.get_rank() else None


def leave() -> None:
    """Leave the group cleanly (torch warns at exit otherwise)."""
    if launched_by_torchrun():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
