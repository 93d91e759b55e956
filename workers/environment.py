"""What a measurement ran on: the device, its CPU or GPU model and driver, and the software versions.

Stored with every measurement (``CandidateResult.environment``), so two figures are only compared when they
were taken alike. torch is imported here, so only worker processes import this module.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def device_description(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return {
            "device": device,
            "device_name": props.name,
            "gpu_memory_bytes": int(props.total_memory),
            "cuda": torch.version.cuda,
            "driver": _nvidia_driver(),
        }
    return {"device": "cpu", "device_name": _cpu_model(), "cpu_count": os.cpu_count()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return None


def software_versions() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }
