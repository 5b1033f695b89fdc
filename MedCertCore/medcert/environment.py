"""Environment record: where a certificate was issued or verified (informative, not a check)."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

import numpy as np
import torch

from medcert import __version__


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:128]
    except OSError:
        pass
    return (platform.processor() or platform.machine())[:128]


def environment_record(device: str = "cpu") -> dict[str, Any]:
    """OS, host, library versions, CPU kernel path, threads, device (and TF32 state on CUDA)."""
    rec: dict[str, Any] = {
        "medcert": __version__,
        "os": f"{platform.system()} {platform.release()}"[:128],
        "hostname": socket.gethostname()[:128],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": int(torch.get_num_threads()),
        "device": device,
        "env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")
                if k in os.environ},
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        rec["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        rec["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        rec["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    return rec
