"""An HTTP service for a trained model (`medxfer serve MODEL`), on FastAPI + uvicorn.

    GET  /          the viewer: a page that takes a dropped or chosen image and shows each
                    finding's probability against its threshold, the Grad-CAM overlay, the
                    out-of-distribution warning, the model and its card (no network assets)
    POST /predict   one PNG, JPEG or DICOM upload (multipart field "file") -> per-finding
                    probabilities, thresholds, findings above threshold and the
                    out-of-distribution flag with its score, threshold and reason
    POST /cam       the same upload -> PNG: the Grad-CAM of one finding (``finding``; default
                    the most probable one above threshold, else the most probable) over the
                    radiograph (``layer=overlay``) or the colour map alone (``layer=map``)
    POST /preview   the same upload -> PNG of the image as the model decoded it (gray, at
                    most 1024 px a side): what a browser cannot show of a DICOM file
    GET  /info      the model: name, version, labels, thresholds, training summary
    GET  /card      the model card (HTML; medxfer.card)
    GET  /health    {"status": "ok", "model": ..., "labels": [...]}
    GET  /docs, /openapi.json   the OpenAPI schema (FastAPI's)

Bad input gets a 4xx with a reason, never a 500: an upload over ``max_upload_mb`` (413),
a content type that is not an image or DICOM (415), bytes that do not decode, truncated
files or images over ``max_pixels`` (422). Binds to 127.0.0.1 unless told otherwise. The
upload lives in memory and, for decoding, in a temporary file deleted before the answer
is sent; nothing is kept. No pickle anywhere: the model folder is safetensors + JSON.
The backbone runs in the extraction engine (``engine="auto"``: onnxruntime on a CPU where it
is installed, torch on a GPU). Concurrent requests are batched: each request decodes its own
upload, then waits for one forward pass that takes every request queued within ``batch_wait_ms``
(at most ``max_batch``); ``max_batch=1`` answers them one at a time. A forward pass that
fails (not the upload's fault: e.g. out of memory) is retried one request at a time, and a
request that still fails gets 503.
"""

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from . import __version__
from .card import build_card, card_html
from .errors import MedxferError
from .model_io import TrainedModel
from .predictor import Predictor, ServiceError
from .records import NOTICE
from .settings import ExtractSettings, ServeSettings, check_of, check_value

#: The viewer page served at / (one file, its script and style inline: works offline).
VIEWER = Path(__file__).with_name("viewer.html")
_S = ServeSettings()  # the defaults
_X = ExtractSettings()

CONTENT_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "application/dicom": ".dcm"}
SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


log = logging.getLogger(__name__)


def model_info(model: TrainedModel, name: str) -> dict:
    """What the viewer shows of the model (GET /info), read from its folder's description."""
    sel = model.metrics or {}
    val = sel.get("validation_metrics") or {}
    data = (model.features or {}).get("training_data") or {}
    return {
        "model": name, "medxfer_version": __version__, "backbone": model.backbone.get("name"),
        "labels": list(model.label_names),
        "thresholds": {n: float(t) for n, t in zip(model.label_names, model.thresholds)},
        "training": {
            "images": data.get("images", model.features.get("n_rows")),
            "patients": data.get("patients"),
            "source": data.get("name", model.features.get("dataset_name")),
            "macro_auc": val.get("macro_auc", sel.get("validation_macro_auc")),
            "macro_auc_ci95": val.get("macro_auc_ci95"),
            "predictions": val.get("predictions"),
        },
        "ood_threshold": None if model.ood is None else model.ood.threshold,
        "notice": NOTICE, "card": "/card",
    }


class OOD(BaseModel):
    flag: bool
    reason: str | None
    score: float | None
    threshold: float | None


class Prediction(BaseModel):
    image: str
    image_id: str
    probabilities: dict[str, float]
    thresholds: dict[str, float]
    above_threshold: list[str]
    findings: list[str]
    findings_withheld: str | None
    threshold_rule: str
    out_of_distribution: OOD
    notice: str


class Health(BaseModel):
    status: str
    model: str
    labels: list[str]


def create_app(model_dir, *, max_upload_mb: float = _S.max_upload_mb,
               max_pixels: int = _X.max_pixels, engine: str = _X.engine, device: str = _X.device,
               max_batch: int = _S.max_batch, batch_wait_ms: float = _S.batch_wait_ms):
    """The FastAPI application serving the model folder ``model_dir`` (engine, device,
    max_batch, batch_wait_ms: see :class:`Predictor`). ``app.state.predictor`` is it."""
    check_value("max_upload_mb", max_upload_mb, check_of(ServeSettings, "max_upload_mb"), "create_app")
    model = TrainedModel.load(model_dir)
    if model.ood is None:
        log.warning("model '%s' has no out-of-distribution score (an older or very small "
                    "model): no input will be flagged by its features, only by a DICOM header",
                    model_dir)
    predictor = Predictor(model, max_pixels=max_pixels, engine=engine, device=device,
                          max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    limit = int(max_upload_mb * 1024 * 1024)
    app = FastAPI(title="medxfer", version=__version__,
                  description=f"Per-finding probabilities of a medxfer model "
                              f"({model.backbone['name']}). {NOTICE}")
    app.state.predictor = predictor
    app.router.on_shutdown.append(predictor.close)

    @app.get("/health", response_model=Health)
    def health() -> dict:
        return {"status": "ok", "model": str(model_dir), "labels": list(model.label_names)}

    name = Path(model_dir).resolve().name
    info = model_info(model, name)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def viewer() -> str:
        return VIEWER.read_text(encoding="utf-8")

    @app.get("/info", description="The model the service runs: name, version, labels, "
                                  f"thresholds and training summary. {NOTICE}")
    def get_info() -> dict:
        return info

    @app.get("/card", response_class=HTMLResponse,
             description="The model card (medxfer.card), built from the model folder.")
    def card() -> str:
        path = Path(model_dir) / "card.html"
        if path.is_file():
            return path.read_text(encoding="utf-8")
        return card_html(build_card(model_dir, name=name))

    async def one_file(request: Request) -> None:
        """Exactly one upload part named 'file' (FastAPI alone would take the first)."""
        if (request.headers.get("content-type") or "").startswith("multipart/form-data"):
            parts = (await request.form()).getlist("file")
            if len(parts) > 1:
                raise HTTPException(400, f"{len(parts)} parts named 'file'; send one image per "
                                         "request")

    @app.post("/predict", response_model=Prediction, dependencies=[Depends(one_file)],
              description=f"The prediction record of one uploaded image. {NOTICE}",
              responses=UPLOAD_ERRORS)
    def predict(file: UploadFile = File(...)) -> dict:
        with upload(file) as tmp:
            return answer(file, tmp, lambda: predictor(tmp, file.filename or "upload"))

    @app.post("/cam", dependencies=[Depends(one_file)], response_class=Response,
              description="The Grad-CAM of the deployed model for one finding of one uploaded "
                          "image, as PNG (at most 1024 px a side; the finding in the X-Finding "
                          f"header). {NOTICE}",
              responses={200: {"content": {"image/png": {}}}, **UPLOAD_ERRORS,
                         422: {"description": "the bytes do not decode, or no such finding"}})
    def cam(file: UploadFile = File(...),
            finding: str | None = Query(None, description="a finding the model predicts (default: "
                                        "the most probable above threshold, else the most probable)"),
            layer: str = Query("overlay", pattern="^(overlay|map)$",
                               description="overlay: the map over the radiograph; map: the colour map alone")):
        if finding is not None and finding not in model.label_names:
            raise HTTPException(422, f"the model predicts no finding named '{finding}'; it predicts "
                                     + ", ".join(model.label_names))
        with upload(file) as tmp:
            png, chosen = answer(file, tmp, lambda: predictor.cam(tmp, finding, layer))
        return Response(png, media_type="image/png", headers={"X-Finding": chosen})

    @app.post("/preview", dependencies=[Depends(one_file)], response_class=Response,
              description="The uploaded image as the model decoded it, as PNG (gray, at most "
                          "1024 px a side).",
              responses={200: {"content": {"image/png": {}}}, **UPLOAD_ERRORS})
    def preview(file: UploadFile = File(...)):
        with upload(file) as tmp:
            return Response(answer(file, tmp, lambda: predictor.preview(tmp)), media_type="image/png")

    @contextmanager
    def upload(file: UploadFile):
        """The upload in a temporary file (deleted on exit), or the 4xx it deserves."""
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        suffix = Path(file.filename or "").suffix.lower()
        if ctype in CONTENT_TYPES:
            suffix = CONTENT_TYPES[ctype] if suffix not in SUFFIXES else suffix
        elif not (ctype in ("application/octet-stream", "") and suffix in SUFFIXES):
            raise HTTPException(415, f"content type '{ctype}' is not image/png, image/jpeg or "
                                     "application/dicom (or octet-stream with a .png/.jpg/.dcm name)")
        data = file.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB (--max-upload-mb)")
        if not data:
            raise HTTPException(422, "the upload is empty")
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="medxfer-upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield tmp
        finally:
            os.unlink(tmp)

    def answer(file: UploadFile, tmp: str, work):
        """``work()``, its failures turned into the service's answers (503 or 422)."""
        try:
            return work()
        except ServiceError as exc:
            raise HTTPException(503, str(exc)) from exc
        except MedxferError as exc:
            reason = str(exc).replace(f"'{tmp}'", f"'{file.filename or 'upload'}'").replace(tmp, "upload")
            raise HTTPException(422, reason) from exc
        except (ValueError, RuntimeError) as exc:  # an image the backbone cannot take
            raise HTTPException(422, f"the image cannot be processed: {exc}") from exc

    return app


UPLOAD_ERRORS = {400: {"description": "more than one 'file' part"},
                 413: {"description": "upload too large"},
                 415: {"description": "not a PNG, JPEG or DICOM upload"},
                 422: {"description": "the bytes do not decode as an image"},
                 503: {"description": "the model could not compute an answer"}}


def serve(model_dir: str | Path, *, host: str = _S.host, port: int = _S.port,
          max_upload_mb: float = _S.max_upload_mb, max_pixels: int = _X.max_pixels,
          **predictor) -> None:
    """Run the service until interrupted (``predictor``: engine, device, max_batch,
    batch_wait_ms)."""
    import socket

    import uvicorn

    try:  # before the model loads: a port in use is found in a second, not after a minute
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose "
                           "another --port (or stop what holds it)") from exc
    uvicorn.run(create_app(model_dir, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                           **predictor), host=host, port=port, log_level="info")


__all__ = ["Predictor", "create_app", "serve"]
