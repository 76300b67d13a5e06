"""Peak memory of a block of work: CUDA max-allocated bytes on a GPU, peak resident set size on the CPU.

CUDA: :func:`torch.cuda.reset_peak_memory_stats` before, :func:`torch.cuda.max_memory_allocated` after,
reported relative to what was allocated on entry (so the model and optimizer state count only when the
block allocates them). CPU (Linux): the kernel's high-water mark ``VmHWM`` is reset by writing ``5`` to
``/proc/self/clear_refs`` and read back from ``/proc/self/status``; the value includes the whole process
(interpreter, torch, data), so compare CPU peaks as differences or ratios measured the same way. Where
neither is available ``peak_bytes`` is None.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _rss_field(name: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes (None off Linux)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_cpu_peak() -> bool:
    """Reset the process's peak RSS to its current RSS; False where the kernel does not allow it."""
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    return True


def current_rss() -> int | None:
    """Resident set size of this process in bytes."""
    return _rss_field("VmRSS")


def peak_rss() -> int | None:
    """Peak resident set size (``VmHWM``) since the last :func:`reset_cpu_peak`, in bytes."""
    return _rss_field("VmHWM")


class PeakMemory:
    """Context manager measuring the peak memory of its block on ``device``.

    After the block: ``peak_bytes`` (CUDA: max allocated; CPU: peak RSS), ``baseline_bytes`` (what was
    in use on entry), ``kind`` (``cuda-max-allocated`` / ``cpu-peak-rss`` / ``unavailable``).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.kind = "unavailable"
        self.peak_bytes: int | None = None
        self.baseline_bytes: int | None = None

    @property
    def extra_bytes(self) -> int | None:
        """Peak minus the baseline on entry: what the block itself needed at its worst moment."""
        if self.peak_bytes is None or self.baseline_bytes is None:
            return None
        return max(0, self.peak_bytes - self.baseline_bytes)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda-max-allocated"
        elif reset_cpu_peak():
            self.baseline_bytes = current_rss()
            self.kind = "cpu-peak-rss" if self.baseline_bytes is not None else "unavailable"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.kind == "cuda-max-allocated":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.kind == "cpu-peak-rss":
            self.peak_bytes = peak_rss()
