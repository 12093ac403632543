"""The machine a benchmark ran on, recorded beside its figures."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import numpy as np


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "0")
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "nproc": os.cpu_count(),
            "cpu": cpu, "memory_gib": round(int(mem) / 2**20, 1), "load_1m": os.getloadavg()[0],
            "python": platform.python_version(), "numpy": np.__version__}
