"""The engine room below feature extraction: which engine and device run a backbone, how
many processes decode images, and the forward pass itself.

Extraction (medxfer.features), the service (medxfer.serve), fine-tuning's feature passes
and export all take their forward pass from here, so a feature is computed the same way
wherever it is computed. Engines are a registry (``registry.Engine``), one file each:
``torch_engine`` (any device) and ``onnxruntime_engine`` (the backbone exported to ONNX,
CPU); a new engine is one more file imported below.
"""

from __future__ import annotations

import logging
import os

import torch

from ..cores import usable_cores
from ..errors import FeatureCacheError
from .registry import Engine, engine_names, get_engine, register_engine
from . import torch_engine, onnxruntime_engine  # noqa: F401  (they register themselves)
from .onnxruntime_engine import OPSET, backbone_onnx, onnx_cache_root, onnx_session
from .torch_engine import torch_forward

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> the GPU when torch sees one, else the CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or another torch device "
                         f"name; got {device!r}") from exc


def process_gpu() -> torch.device:
    """This process's GPU under a launcher: cuda:LOCAL_RANK (torchrun), else cuda:RANK,
    modulo the GPUs torch sees (more processes than GPUs share them)."""
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))
    return torch.device(f"cuda:{local % max(1, torch.cuda.device_count())}")


def node_cores() -> int:
    """This process's share of the cores it may use (affinity, cgroup quota), split among
    LOCAL_WORLD_SIZE processes per node under torchrun."""
    return max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def decode_workers(device: torch.device, decode_bound: bool = False) -> int:
    """Decoding processes when none are given, shared fairly by the processes of one node
    (LOCAL_WORLD_SIZE under torchrun). A decode-bound engine (onnxruntime), or a GPU, makes
    the forward pass cheap enough that decoding is the wall: every core (up to 8 for
    onnxruntime, which still needs one for itself; cores - 1 up to 32 beside a GPU). With
    torch on the CPU, one worker leaves the rest to torch."""
    cores = node_cores()
    if decode_bound:
        return min(8, cores)
    if device.type != "cpu":
        return max(1, min(32, cores - 1))
    return max(1, min(8, cores - 1))


def choose_engine(engine: str = "auto", device: str = "auto", *,
                  world_size: int = 1) -> tuple[str, torch.device]:
    """(engine, torch device) that a forward pass will use.

    "auto" picks torch on a GPU and, on the CPU, the installed engine that prefers it
    (onnxruntime where onnx and onnxruntime import); otherwise torch. A CPU-only engine
    asked for together with a GPU device is refused. Under torchrun (world_size > 1) a bare
    "cuda" becomes cuda:LOCAL_RANK, one GPU per process (modulo the number of GPUs).
    """
    if engine != "auto" and engine not in engine_names():
        raise FeatureCacheError(f"engine must be one of auto, {', '.join(engine_names())}; "
                                f"got '{engine}'")
    cpu_only = engine != "auto" and get_engine(engine).cpu_only
    try:
        dev = resolve_device("cpu" if cpu_only and device == "auto" else device)
    except ValueError as exc:
        raise FeatureCacheError(str(exc)) from exc
    if dev.type == "cuda" and dev.index is None and world_size > 1:
        dev = process_gpu()  # extraction needs no NCCL: processes may share a GPU
    if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
        raise FeatureCacheError(f"device {dev} was asked for, but torch sees "
                                f"{torch.cuda.device_count()} GPU(s); pass --device auto or cpu")
    if engine == "auto":
        engine = next((n for n in engine_names() if dev.type == "cpu"
                       and get_engine(n).preferred_on_cpu and get_engine(n).installed()), "torch")
    if get_engine(engine).cpu_only and dev.type != "cpu":
        raise FeatureCacheError(f"the {engine} engine runs on the CPU, not on {dev}: pass "
                                "--engine torch to use the GPU, or --device cpu")
    return engine, dev


def prepare(backbone, engine: str, device: torch.device, *, asked: str):
    """(engine actually used, make(threads) -> forward pass) for a backbone and a chosen
    engine (:func:`choose_engine`). An engine that cannot take this backbone (e.g. it does
    not export to ONNX) falls back to torch with a warning when it was only the automatic
    choice; ``asked`` is what the user asked for, and asked by name it fails clearly."""
    try:
        return engine, get_engine(engine).load(backbone, device)
    except Exception as exc:  # any exporter failure: torch gives the same features
        if engine == "torch" or asked == engine:
            raise FeatureCacheError(f"backbone {backbone.config.name} could not run in the "
                                    f"{engine} engine ({exc}); use --engine torch") from exc
        log.warning("backbone %s did not run in the %s engine (%s); using torch instead",
                    backbone.config.name, engine, exc)
        return "torch", get_engine("torch").load(backbone, device)


__all__ = ["Engine", "OPSET", "backbone_onnx", "choose_engine", "decode_workers", "engine_names",
           "get_engine", "node_cores", "onnx_cache_root", "onnx_session", "prepare",
           "process_gpu", "register_engine", "resolve_device", "torch_forward"]
