"""The engine room below feature extraction: which engine and device run a backbone, how
many processes decode images, the one forward-pass builder, and a backbone's ONNX file.

Extraction (medxfer.features), the service (medxfer.serve), fine-tuning and export all
take their forward pass from here, so a feature is computed the same way wherever it is
computed (channels-last, TF32 off on GPUs, onnxruntime's CPU provider).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from . import __version__
from .backbones import Backbone
from .errors import FeatureCacheError
from .settings import ENGINES

log = logging.getLogger(__name__)

#: ONNX opset of every export; part of a cached file's key.
OPSET = 17


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
    """This process's share of the machine's cores (LOCAL_WORLD_SIZE processes per node)."""
    return max(1, (os.cpu_count() or 2) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def decode_workers(device: torch.device, onnxruntime: bool = False) -> int:
    """Decoding processes when none are given, shared fairly by the processes of one node
    (LOCAL_WORLD_SIZE under torchrun). onnxruntime, or a GPU, makes the forward pass cheap
    enough that decoding is the wall: every core (up to 8 for onnxruntime, which still
    needs one for itself; cores - 1 up to 32 beside a GPU). With torch on the CPU, one
    worker leaves the rest to torch."""
    cores = node_cores()
    if onnxruntime:
        return min(8, cores)
    if device.type != "cpu":
        return max(1, min(32, cores - 1))
    return max(1, min(8, cores - 1))


def onnxruntime_installed() -> bool:
    """Whether onnx and onnxruntime import here (the `[onnx]` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def choose_engine(engine: str = "auto", device: str = "auto", *,
                  world_size: int = 1) -> tuple[str, torch.device]:
    """(engine, torch device) that a forward pass will use.

    "auto" picks torch on a GPU and onnxruntime on the CPU where onnx and onnxruntime import
    (2.7x torch's throughput on 2 cores, README); otherwise torch. onnxruntime runs on the
    CPU only, so asking for it together with a GPU device is refused. Under torchrun
    (world_size > 1) a bare "cuda" becomes cuda:LOCAL_RANK, one GPU per process (modulo the
    number of GPUs).
    """
    if engine not in ENGINES:
        raise FeatureCacheError(f"engine must be one of {', '.join(ENGINES)}; got '{engine}'")
    try:
        dev = resolve_device("cpu" if engine == "onnxruntime" and device == "auto" else device)
    except ValueError as exc:
        raise FeatureCacheError(str(exc)) from exc
    if dev.type == "cuda" and dev.index is None and world_size > 1:
        dev = process_gpu()  # extraction needs no NCCL: processes may share a GPU
    if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
        raise FeatureCacheError(f"device {dev} was asked for, but torch sees "
                                f"{torch.cuda.device_count()} GPU(s); pass --device auto or cpu")
    if engine == "auto":
        engine = "onnxruntime" if dev.type == "cpu" and onnxruntime_installed() else "torch"
    if engine == "onnxruntime" and dev.type != "cpu":
        raise FeatureCacheError(f"the onnxruntime engine runs on the CPU, not on {dev}: pass "
                                "--engine torch to use the GPU, or --device cpu")
    return engine, dev


def onnx_cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where exported backbones are kept: ``cache_dir``, $MEDXFER_CACHE or ~/.cache/medxfer."""
    return Path(cache_dir or os.environ.get("MEDXFER_CACHE") or Path.home() / ".cache" / "medxfer")


def backbone_onnx(backbone: Backbone, cache_dir: str | Path | None = None) -> Path:
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
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def exported_or_none(backbone: Backbone, *, required: bool) -> Path | None:
    """The backbone's cached ONNX file; None (with a warning) when it does not export and
    onnxruntime was only the automatic choice, so the caller goes on with torch."""
    try:
        return backbone_onnx(backbone)
    except Exception as exc:  # any exporter failure: torch gives the same features
        if required:
            raise FeatureCacheError(f"backbone {backbone.config.name} could not be exported to "
                                    f"ONNX for --engine onnxruntime ({exc}); use --engine torch") from exc
        log.warning("backbone %s did not export to ONNX (%s); using torch instead",
                    backbone.config.name, exc)
        return None


def prepare(backbone: Backbone, engine: str, device: torch.device, *,
            asked: str) -> tuple[str, Path | None]:
    """(engine actually used, ONNX file or None) for a backbone and a chosen engine:
    onnxruntime needs the exported file, and falls back to torch when it was only the
    automatic choice (``asked`` is what the user asked for)."""
    if engine != "onnxruntime":
        return "torch", None
    onnx_file = exported_or_none(backbone, required=asked == "onnxruntime")
    return ("onnxruntime" if onnx_file else "torch"), onnx_file


def backbone_forward(backbone: Backbone, onnx_file: Path | None, device: torch.device, *,
                     threads: int | None = None):
    """x (B, 3, S, S) CPU tensor -> (B, d) float32 numpy features: in onnxruntime when
    ``onnx_file`` is given (``threads`` intra-op threads), else in torch on ``device``
    (channels-last; the backbone is moved there). Extraction, fine-tuning's feature passes
    and the service all use it.

    On a GPU, cuDNN's TF32 convolutions would move features about 3e-3 of their scale away
    from the CPU's (measured on an H100); each pass runs in full float32 so features are
    comparable across devices (decoding, not the forward pass, bounds a GPU pipeline)."""
    if onnx_file:
        session = onnx_session(onnx_file, threads=threads)
        return lambda x: session.run(None, {"x": x.numpy()})[0]
    model = backbone.to(device, memory_format=torch.channels_last)

    def forward(x):
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.inference_mode():
                x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                return model(x).float().cpu().numpy()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return forward
