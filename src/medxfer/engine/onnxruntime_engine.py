"""The onnxruntime engine: the backbone exported once to ONNX (cached by its identity) and
run by onnxruntime's CPU provider; 2.7x torch's throughput on 2 cores (README)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch

from .. import __version__
from .registry import Engine, register_engine

#: ONNX opset of every export; part of a cached file's key.
OPSET = 17


def onnxruntime_installed() -> bool:
    """Whether onnx and onnxruntime import here (the `[onnx]` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def onnx_cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where exported backbones are kept: ``cache_dir``, $MEDXFER_CACHE or ~/.cache/medxfer."""
    return Path(cache_dir or os.environ.get("MEDXFER_CACHE") or Path.home() / ".cache" / "medxfer")


def backbone_onnx(backbone, cache_dir: str | Path | None = None) -> Path:
    """The backbone alone (normalized 3-channel input -> pooled features) as ONNX, exported
    once and cached under ``onnx_cache_root(cache_dir)/onnx``, keyed by the backbone's
    identity (every weights sha256, pooling, input size, fine-tuning), medxfer's version and
    the opset: new weights give a new file, never a stale one."""
    # medxfer's version and the opset: the graph also depends on medxfer's own code
    # (e.g. the resizing inside a concatenation), not only on the weights.
    ident = json.dumps([backbone.identity().as_dict(), __version__, OPSET], sort_keys=True, default=str)
    key = hashlib.sha256(ident.encode()).hexdigest()[:20]
    path = onnx_cache_root(cache_dir) / "onnx" / f"{backbone.config.name.replace(':', '_')}-{key}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    size = backbone.preprocessing.size
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(backbone.eval(), (torch.randn(2, 3, size, size),), str(tmp),
                          input_names=["x"], output_names=["features"], opset_version=OPSET,
                          dynamo=False, dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}})
    os.replace(tmp, path)  # atomic: concurrent exporters (ranks) each write their own tmp
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session of an exported file (``threads`` intra-op threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # idle intra-op threads sleep instead of spinning: a neighbour process keeps its cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _load(backbone, device):
    path = backbone_onnx(backbone)  # the one slow, fallible step: done before any decoding

    def make(threads):
        session = onnx_session(path, threads=threads)
        return lambda x: session.run(None, {"x": x.numpy()})[0]
    return make


register_engine(Engine(
    name="onnxruntime", description="the backbone exported to ONNX once (cached by its weights' "
    "hash) and run by onnxruntime on the CPU; features equal to torch's within float rounding",
    installed=lambda: onnxruntime_installed(), load=_load, cpu_only=True,
    preferred_on_cpu=True, decode_bound=True))
