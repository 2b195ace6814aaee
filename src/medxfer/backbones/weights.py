"""Weights files and fine-tuned states: their hashes, loading, and the check that a model
is rebuilt with the weights it was trained with."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..errors import BackboneError, ModelError
from ..hashing import sha256_file

_HASHES: dict[tuple, str] = {}


def weights_sha256(path: Path | None) -> str | None:
    """sha256 of a weights file, memoized per (path, size, mtime)."""
    if path is None:
        return None
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def state_sha256(state: dict) -> str:
    """sha256 of a state dict: its keys in sorted order, each followed by the tensor's
    bytes (CPU, as stored). Identical tensors give identical hashes across machines."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_weights(label: str, path: Path | None, expected: str | None) -> None:
    """ModelError when the weights file found here is not the one a model recorded
    (``label`` names the backbone in the message)."""
    if expected and path is not None and path.is_file():
        found = weights_sha256(path)
        if found != expected:
            raise ModelError(
                f"the weights of backbone {label} on this machine ({path}) differ "
                "from those the model was trained with (sha256 mismatch); install the same "
                f"weights package version (sha256 here {str(found)[:12]}..., recorded "
                f"{expected[:12]}...)")


def load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"cannot read weights file '{path}': {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def hub_checkpoint(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename
