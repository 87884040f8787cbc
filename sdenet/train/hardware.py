"""What a result ran on: one description string shared by training runs and benchmarks.

``describe(device)`` gives e.g. ``"NVIDIA H100 80GB HBM3 (cuda:0, 1 GPU), 16 CPU cores,
torch 2.4.0"`` or ``"Intel(R) Xeon(R) ... (2 cores), torch 2.4.0"``; ``info(device)`` the same
facts as a dict.
"""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["cpu_model", "cpu_cores", "info", "describe"]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def info(device=None) -> dict:
    """Facts about ``device`` (default: CUDA when present, else CPU) and the host."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    d = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_cores": cpu_cores(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        d["gpu"] = torch.cuda.get_device_name(index)
        d["gpu_count"] = torch.cuda.device_count()
        d["cuda"] = torch.version.cuda
        props = torch.cuda.get_device_properties(index)
        d["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return d


def describe(device=None, world_size: int = 1) -> str:
    """One line: the accelerator (or CPU) name, core count and torch version."""
    d = info(device)
    if "gpu" in d:
        n = max(int(world_size), 1)
        head = f"{d['gpu']} ({d['device']}, {n} GPU{'s' if n > 1 else ''}), {d['cpu_cores']} CPU cores"
    else:
        head = f"{d['cpu']} ({d['cpu_cores']} cores)"
        if world_size > 1:
            head += f" x {world_size} processes"
    return f"{head}, torch {d['torch']}"
