"""What the benchmark scripts record about the machine they ran on."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(**packages: str) -> dict:
    """The machine and run a benchmark records: CPU, cores, torch threads, versions (torch, python
    and the ``packages`` given as name=version), date and load average (the machine is shared)."""
    import os
    import time

    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **packages,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "load_average": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
