"""Peak memory of a stretch of work: the CUDA allocator's peak, or the process's peak RSS."""

from __future__ import annotations

import os
import resource

import torch


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator peak, or the process's peak RSS on
    the CPU (Linux: VmHWM after resetting it; the whole process, other threads included)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.resettable = _reset_peak_rss()
            self.start = _rss_bytes("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.resettable:
            peak = _rss_bytes("VmHWM")
        else:
            peak = _lifetime_peak_rss()  # an upper bound
        self.peak_mb = max(0.0, (peak - self.start) / 2**20)


def _reset_peak_rss() -> bool:
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _rss_bytes(key: str) -> int:
    """A byte count from /proc/<pid>/status (VmRSS: now, VmHWM: the peak since the reset)."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _lifetime_peak_rss()


def _lifetime_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
