"""The one way an image file becomes a prediction record in a long-running process (the
HTTP service, the DICOM node): the model's backbone in the extraction engine, concurrent
requests batched into one forward pass, Grad-CAM one map at a time.

Concurrent requests are batched: each request decodes its own image, then waits for one
forward pass that takes every request queued within ``batch_wait_ms`` (at most
``max_batch``); ``max_batch=1`` answers them one at a time. A forward pass that fails (not
the image's fault: e.g. out of memory) is retried one request at a time, and a request that
still fails gets :class:`ServiceError`.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .cam import CAM_ALPHA, backbone_for, colour_map, grad_cam
from .engine import choose_engine, prepare
from .errors import MedxferError
from .images import load_image
from .model_io import TrainedModel
from .records import PredictionRecord, predict_records
from .settings import ExtractSettings, ServeSettings, check_of, check_value

#: The longest side of the images preview() and cam() answer with.
DISPLAY_SIDE = 1024

_STOP = object()
_S = ServeSettings()  # the defaults
_X = ExtractSettings()


class ServiceError(MedxferError):
    """The model could not compute an answer (not the image's fault): the service's 503."""


class Predictor:
    """Decoded image file -> the JSON answer; thread-safe. Forward passes run in one worker
    thread, on batches of the requests that arrived together (see the module's docstring);
    ``batch_sizes`` counts the batches it ran, by size. A batch whose forward pass fails is
    rerun one request at a time, so one failure reaches only its own request (as
    ServiceError). ``close()`` ends the worker (the app calls it at shutdown)."""

    def __init__(self, model: TrainedModel, *, max_pixels: int = _X.max_pixels,
                 engine: str = _X.engine, device: str = _X.device, max_batch: int = _S.max_batch,
                 batch_wait_ms: float = _S.batch_wait_ms, timeout_s: float = 300.0):
        for name, value in (("max_batch", max_batch), ("batch_wait_ms", batch_wait_ms)):
            check_value(name, value, check_of(ServeSettings, name), "Predictor")
        self.model = model
        self.backbone = backbone_for(model).eval()
        self.max_pixels = max_pixels
        self.max_batch, self.wait, self.timeout = max_batch, batch_wait_ms / 1000, timeout_s
        chosen, self.device = choose_engine(engine, device)
        self.engine, make_forward = prepare(self.backbone, chosen, self.device, asked=engine)
        self._forward = make_forward(None)
        self.batch_sizes: dict[int, int] = {}
        self._cam_lock = threading.Lock()
        self._cam_backbone = None  # built on the first Grad-CAM
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, daemon=True, name="medxfer-batcher")
        self._worker.start()

    def close(self) -> None:
        """End the worker thread (requests still queued are answered first)."""
        self._queue.put(_STOP)
        self._worker.join(timeout=10)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            self._answer(batch)
            if stop:
                return

    def _answer(self, batch) -> None:
        """Set every future of ``batch``; never raises (the worker must live on)."""
        try:
            z = self._forward(torch.cat([x for x, _ in batch]))
            for (_, fut), row in zip(batch, z, strict=True):
                fut.set_result(row)
            return
        except Exception as exc:
            if len(batch) == 1:
                fut = batch[0][1]
                if not fut.done():
                    fut.set_exception(ServiceError(f"the model could not process this image: {exc}"))
                return
        for item in batch:  # isolate the failure: one request at a time
            if not item[1].done():
                self._answer([item])

    def features(self, x: torch.Tensor) -> np.ndarray:
        """Backbone features of one preprocessed image (1, 3, S, S), via the batcher."""
        fut: Future = Future()
        self._queue.put((x, fut))
        try:
            return fut.result(timeout=self.timeout)[None]
        except (TimeoutError, FutureTimeout) as exc:  # one class from Python 3.11, two before
            raise ServiceError(f"no answer from the model within {self.timeout:g} s") from exc

    def record(self, path: str, name: str | None = None) -> PredictionRecord:
        """The prediction record of one image file (``name``: what the record calls it)."""
        return self._record(load_image(path, self.max_pixels), path, name)

    def _record(self, gray: np.ndarray, path: str, name: str | None = None) -> PredictionRecord:
        """The record of an image file already decoded to ``gray``."""
        z = self.features(self.backbone.preprocessing(gray)[None])
        # rounded to the storage type of the training features, as `predict` stores them
        z = z.astype(self.model.feature_dtype).astype(np.float32)
        name = name or Path(path).name
        rec = predict_records(self.model, z, [path], [name])[0]
        return replace(rec, image=name)

    def __call__(self, path: str, name: str | None = None) -> dict:
        """The JSON answer for one image file: its prediction record."""
        return self.record(path, name).to_dict()

    def preview(self, path: str) -> bytes:
        """PNG of the image as the model decodes it, at most DISPLAY_SIDE px a side."""
        return png(display(load_image(path, self.max_pixels)))

    def cam(self, path: str, finding: str | None = None, layer: str = "overlay") -> tuple[bytes, str]:
        """(PNG, finding) of :meth:`cam_image`."""
        rgb, finding = self.cam_image(path, finding, layer)
        return png(rgb), finding

    def cam_image(self, path: str, finding: str | None = None,
                  layer: str = "overlay") -> tuple[np.ndarray, str]:
        """(RGB array in [0, 1], finding) of the Grad-CAM of the deployed model for
        ``finding`` (default: the most probable finding above threshold, else the most
        probable) on one image file: over the radiograph (``layer="overlay"``) or the colour
        map alone (``"map"``), at the size of :meth:`preview`. One map at a time (each holds a
        backward pass), on a CPU copy of the backbone of its own: the forward passes of the
        predictions (on a GPU, or through the stage hooks of multistage pooling) never share
        a module with it."""
        gray = load_image(path, self.max_pixels)
        if finding is None:
            rec = self._record(gray, path)
            finding = max(rec.above_threshold or rec.probabilities, key=rec.probabilities.get)
        with self._cam_lock:
            if self._cam_backbone is None:
                self._cam_backbone = backbone_for(self.model).eval()
            cam = grad_cam(self.model, gray, [finding], backbone=self._cam_backbone)[finding]
        shown, cam = display(gray), display(cam)
        rgb = colour_map(cam)
        if layer == "overlay":
            base = np.repeat(shown[..., None], 3, axis=2)
            rgb = (1 - CAM_ALPHA) * base + CAM_ALPHA * rgb
        return rgb, finding


def display(a: np.ndarray) -> np.ndarray:
    """A (H, W) map in [0, 1] scaled down to at most DISPLAY_SIDE px a side."""
    from PIL import Image

    h, w = a.shape
    scale = min(1.0, DISPLAY_SIDE / max(h, w))
    if scale == 1.0:
        return a
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def png(a: np.ndarray) -> bytes:
    """PNG bytes of a gray (H, W) or RGB (H, W, 3) array in [0, 1]."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


__all__ = ["DISPLAY_SIDE", "Predictor", "ServiceError", "display", "png"]
