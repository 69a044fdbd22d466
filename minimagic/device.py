"""The one place that chooses the device (cuda, then mps, then cpu) and the training precision."""

import torch


def pick_device(name: str = "auto") -> torch.device:
    """The one place that chooses the device: cuda, then mps, then cpu (or the name given, checked)."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ValueError(f"device {name!r}: no such CUDA GPU here ({torch.cuda.device_count()} found)")
    if device.type == "mps" and not mps:
        raise ValueError(f"device {name!r}: Apple's MPS is not available here")
    return device


def pick_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on CUDA, fp32 elsewhere; fp16 (with loss scaling) only on CUDA."""
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA GPU (device {device}): use fp32 or bf16")
    return name if name != "auto" else ("bf16" if device.type == "cuda" else "fp32")
