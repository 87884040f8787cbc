"""Where a run computes: the device (:func:`resolve_device`), the processes of a ``torchrun``
launch (:class:`_Dist`: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; nccl on CUDA, gloo on CPU)
and the seeds derived from the run's seed (:func:`_seed`)."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device"]


def resolve_device(spec="auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is present, else ``cpu``; ``cuda`` ->
    ``cuda:LOCAL_RANK``; ``cuda:N``, ``cpu`` as given. ValueError when CUDA is asked for and
    absent."""
    s = str(spec if spec is not None else "auto").strip().lower()
    if s == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: CUDA is not available on this machine (use --device cpu)")
        if s == "cuda":
            return torch.device(f"cuda:{local_rank}")
        try:
            index = int(s.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"device {spec!r}: expected cuda:N with an integer N") from None
        if not 0 <= index < torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: there are {torch.cuda.device_count()} CUDA devices")
        return torch.device(f"cuda:{index}")
    raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


class _Dist:
    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)) or 0)
        self.owned = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device):
        if self.world_size <= 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo", rank=self.rank, world_size=self.world_size
            )
            self.owned = True

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def all_gather(self, obj):
        if self.world_size <= 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, model):
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b, 0)

    def barrier(self):
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False


def _seed(*parts) -> int:
    import numpy as np

    state = np.random.SeedSequence([int(p) % (1 << 63) for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)
