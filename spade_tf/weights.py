"""Readers of PyTorch state dicts (``.pth``) and their ``.npz`` form, on the ground floor: the
official checkpoint import (``spade_tf.convert``) and the VGG19 loss (``spade_tf.losses``) both
read with them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads an official ``.pth`` state dict with ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch: pip install 'spade-tf[torch]' "
                          f"(or save the state dict as .npz and pass that)") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ValueError(f"{path}: cannot read as a PyTorch state dict: {type(e).__name__}: {e}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of tensors), got {type(obj).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A state dict from ``.pth`` (torch) or ``.npz`` (keys as in the official state dict)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return read_torch_state_dict(p)
