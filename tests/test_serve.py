"""The HTTP service over real HTTP on loopback: answers, refusals with reasons, load."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

from medxfer.cli import main

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("multipart")


def _post(url, data: bytes, filename: str, ctype: str):
    """(status, JSON body) of a multipart upload."""
    code, _, body, _ = _post_raw(url, data, filename, ctype)
    return code, json.loads(body)


def _post_raw(url, data: bytes, filename: str, ctype: str):
    """(status, content type, body bytes, headers) of a multipart upload."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers.get("content-type"), r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read(), e.headers


@contextmanager
def running(app):
    """The app served by uvicorn on a free loopback port; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(timeout=10)


@pytest.fixture(scope="module")
def service(tiny_trained):
    from medxfer.serve import create_app

    with running(create_app(tiny_trained / "m", max_upload_mb=1.0)) as url:
        yield url, tiny_trained / "cxr"


def test_health_schema_and_a_prediction(service):
    url, root = service
    with urllib.request.urlopen(url + "/health") as r:
        h = json.loads(r.read())
    assert h["status"] == "ok" and "Effusion" in h["labels"]
    with urllib.request.urlopen(url + "/openapi.json") as r:
        schema = json.loads(r.read())
    assert "/predict" in schema["paths"] and "422" in schema["paths"]["/predict"]["post"]["responses"]
    png = sorted((root / "images").glob("*.png"))[0].read_bytes()
    code, body = _post(url + "/predict", png, "x.png", "image/png")
    assert code == 200 and set(body["probabilities"]) == set(h["labels"])
    assert body["out_of_distribution"]["threshold"] > 0 and isinstance(body["findings"], list)


def test_bad_uploads_get_4xx_with_a_reason(service, tmp_path):
    import pydicom
    from pathlib import Path

    url, root = service
    png = sorted((root / "images").glob("*.png"))[0].read_bytes()
    from .test_images import _png_header_only

    bomb = _png_header_only(tmp_path / "b.png", 20000, 20000).read_bytes()
    cases = [
        (b"not an image at all", "x.png", "image/png", 422, "not a readable image"),
        (png[:200], "x.png", "image/png", 422, "corrupt or truncated"),
        (bomb, "b.png", "image/png", 422, "above the limit"),
        (b"\0" * (1024 * 1024 + 10), "big.png", "image/png", 413, "larger than 1 MB"),
        (png, "x.txt", "text/plain", 415, "not image/png"),
        (b"", "x.png", "image/png", 422, "empty"),
    ]
    for data, name, ctype, want, reason in cases:
        code, body = _post(url + "/predict", data, name, ctype)
        assert code == want and reason in body["detail"], (name, code, body)
        assert "medxfer-upload-" not in body["detail"]  # no server-side temp path leaks
    mr = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small_jpeg_ls_lossless.dcm"
    code, body = _post(url + "/predict", mr.read_bytes(), "mr.dcm", "application/dicom")
    assert code == 200 and body["out_of_distribution"]["flag"]
    assert "Modality is MR" in body["out_of_distribution"]["reason"]


def test_200_requests_from_8_clients_without_an_error(service):
    url, root = service
    files = [p.read_bytes() for p in sorted((root / "images").glob("*.png"))[:8]]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: _post(url + "/predict", files[i % 8], f"{i}.png", "image/png")[0],
                              range(200)))
    assert codes == [200] * 200


def test_serve_cli_refuses_bad_options(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "--max-batch must be" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--engine", "tensorrt"]) == 2
    assert "--engine must be one of auto, torch, onnxruntime; got 'tensorrt'" in capsys.readouterr().err


def test_concurrent_requests_share_forward_passes_with_the_same_answers(tiny_trained):
    """Requests that arrive together are answered by one forward pass (batch_sizes shows
    batches above 1), each with its own image's features (as computed alone, to float
    rounding), in either engine; a failing forward pass reaches only the requests it must,
    as ServiceError (503), and the worker lives on; close() ends it."""
    import numpy as np

    from medxfer.images import load_image
    from medxfer.model_io import TrainedModel
    from medxfer.serve import Predictor, ServiceError

    model = TrainedModel.load(tiny_trained / "m")
    files = [str(p) for p in sorted((tiny_trained / "cxr" / "images").glob("*.png"))[:8]]
    alone = Predictor(model, max_batch=1, engine="torch")
    xs = [alone.backbone.preprocessing(load_image(f))[None] for f in files]
    want = np.concatenate([alone.features(x) for x in xs])
    assert min(np.abs(want[i] - want[j]).max() for i in range(8) for j in range(i)) > 1e-3  # distinct
    for engine, tol in (("torch", 1e-5), ("onnxruntime", 1e-3)):
        batched = Predictor(model, max_batch=8, batch_wait_ms=200, engine=engine)
        with ThreadPoolExecutor(8) as pool:
            got = np.concatenate(list(pool.map(batched.features, xs)))
        assert batched.engine == engine and max(batched.batch_sizes) > 1
        np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max())
        batched.close()
        assert not batched._worker.is_alive()
    assert set(alone.batch_sizes) == {1}

    flaky = Predictor(model, max_batch=8, batch_wait_ms=200, engine="torch")
    real = flaky._forward
    flaky._forward = lambda x: real(x) if len(x) == 1 else (_ for _ in ()).throw(RuntimeError("batch broke"))
    with ThreadPoolExecutor(4) as pool:  # batches fail, each request is retried alone
        got = np.concatenate(list(pool.map(flaky.features, xs[:4])))
    np.testing.assert_allclose(got, want[:4], atol=1e-5 * np.abs(want).max())
    assert max(flaky.batch_sizes) > 1  # the failing batch did form
    flaky._forward = lambda x: (_ for _ in ()).throw(RuntimeError("out of memory"))
    with pytest.raises(ServiceError, match="out of memory"):
        flaky.features(xs[0])
    flaky._forward = real
    np.testing.assert_allclose(flaky.features(xs[1]), want[1:2], atol=1e-5 * np.abs(want).max())
    with pytest.raises(ValueError, match="batch_wait_ms"):
        Predictor(model, batch_wait_ms=float("inf"))


def test_serve_refuses_an_unbounded_batch_wait(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--batch-wait-ms", "inf"]) == 2
    assert "--batch-wait-ms must be" in capsys.readouterr().err


def test_a_1x1_upload_two_file_parts_and_the_research_notice(service, tmp_path):
    """Issue 24: a tiny image is refused, two 'file' parts are refused rather than the first
    used, and the answer and the OpenAPI text say research tool, not medical device."""
    import io

    from PIL import Image

    from medxfer.records import NOTICE

    url, root = service
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    code, body = _post(url + "/predict", buf.getvalue(), "dot.png", "image/png")
    assert code == 422 and "smaller than the 32 x 32" in body["detail"]
    good = sorted(root.glob("images/*.png"))[0].read_bytes()
    code, body = _post(url + "/predict", good, "a.png", "image/png")
    assert code == 200 and body["notice"] == NOTICE and "above_threshold" in body
    assert body["threshold_rule"].startswith("per finding")
    with urllib.request.urlopen(url + "/openapi.json") as r:
        spec = json.loads(r.read())
    assert NOTICE in spec["info"]["description"]
    assert NOTICE in spec["paths"]["/predict"]["post"]["description"]
    boundary = uuid.uuid4().hex
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + good + b"\r\n"
    req = urllib.request.Request(url + "/predict", data=part * 2 + f"--{boundary}--\r\n".encode(),
                                 method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    assert e.value.code == 400 and "2 parts named 'file'" in json.loads(e.value.read())["detail"]



def test_viewer_page_info_card_preview_and_cam(service, tmp_path):
    """Issue 23: the page at / needs nothing from the network; /info and /card describe the
    model from its folder; /preview and /cam answer PNGs at most 1024 px a side, the overlay
    and the bare map differ; bad uploads get the answers /predict gives."""
    import io

    from PIL import Image

    url, root = service
    with urllib.request.urlopen(url + "/") as r:
        page = r.read().decode()
    assert r.status == 200 and "medxfer viewer" in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    with urllib.request.urlopen(url + "/info") as r:
        info = json.loads(r.read())
    assert info["training"]["images"] == 30 and info["card"] == "/card"
    assert info["labels"] and set(info["thresholds"]) == set(info["labels"])
    with urllib.request.urlopen(url + "/card") as r:
        card = r.read().decode()
    assert "<h1>Model card: m</h1>" in card and "No evaluation on new patients" in card

    src = sorted((root / "images").glob("*.png"))[0]
    png = src.read_bytes()
    code, ctype, body, _ = _post_raw(url + "/preview", png, "x.png", "image/png")
    shown = Image.open(io.BytesIO(body))
    assert code == 200 and ctype == "image/png" and shown.mode == "L"
    assert max(shown.size) <= 1024 and shown.size[0] / shown.size[1] == pytest.approx(
        Image.open(src).size[0] / Image.open(src).size[1], rel=0.01)
    _, pred = _post(url + "/predict", png, "x.png", "image/png")
    top = max(pred["above_threshold"] or pred["probabilities"], key=pred["probabilities"].get)
    code, ctype, over, headers = _post_raw(url + "/cam", png, "x.png", "image/png")
    assert code == 200 and ctype == "image/png" and headers["X-Finding"] == top
    name = info["labels"][-1]
    code, _, bare, headers = _post_raw(url + f"/cam?finding={name}&layer=map", png, "x.png", "image/png")
    assert code == 200 and headers["X-Finding"] == name
    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB"), dtype=float) for x in (over, bare))
    assert a.shape == b.shape == (*shown.size[::-1], 3) and np.abs(a - b).mean() > 5

    code, _, body, _ = _post_raw(url + "/cam?finding=Dragons", png, "x.png", "image/png")
    assert code == 422 and "no finding named 'Dragons'" in json.loads(body)["detail"]
    code, _, body, _ = _post_raw(url + "/cam?layer=x", png, "x.png", "image/png")
    assert code == 422
    for path in ("/cam", "/preview"):
        for data, fname, ctype, want, reason in [
                (b"not an image at all", "junk.png", "image/png", 422, "not a readable image"),
                (png, "x.txt", "text/plain", 415, "not image/png"),
                (b"\0" * (1024 * 1024 + 10), "big.png", "image/png", 413, "larger than 1 MB")]:
            code, _, body, _ = _post_raw(url + path, data, fname, ctype)
            assert code == want and reason in json.loads(body)["detail"], (path, fname, code, body)
