"""One prediction record: `predict --json`, the service and evaluate's predictions.csv give
the same record for the same image."""

import json
import socket
import threading
import time
import urllib.request
import uuid

import numpy as np
import pandas as pd
import pytest

from medxfer.cli import main


def _serve_once(model_dir, path):
    """POST one file to a real service on loopback; its JSON answer."""
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("multipart")
    from medxfer.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model_dir), host="127.0.0.1", port=port,
                                           log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{path.name}\"\r\nContent-Type: image/png\r\n\r\n").encode() \
            + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    finally:
        server.should_exit = True
        th.join(timeout=10)


@pytest.mark.slow
def test_cli_service_and_evaluate_give_one_record(tiny_trained, tmp_path, capsys):
    base = tiny_trained
    images = sorted((base / "cxr" / "images").glob("*.png"))
    img = images[0]
    capsys.readouterr()
    assert main(["-q", "predict", str(base / "m"), str(img), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["predictions"][0]
    http = _serve_once(base / "m", img)
    # evaluate on the training features (the guard would refuse them: allowed explicitly)
    assert main(["-q", "evaluate", str(base / "m"), str(base / "f"), "--out", str(tmp_path / "r"),
                 "--allow-training-patients", "--n-boot", "10"]) == 0
    rows = pd.read_csv(tmp_path / "r" / "predictions.csv", keep_default_na=False)
    row = rows[rows["image_id"] == img.name].iloc[0]
    names = list(cli["probabilities"])
    assert len(names) == 14 and cli["image_id"] == http["image_id"] == img.name
    for key in ("probabilities", "thresholds", "above_threshold", "findings", "findings_withheld",
                "threshold_rule", "out_of_distribution", "notice"):
        assert cli[key] == http[key], key
    assert {n: float(row[f"prob_{n}"]) for n in names} == pytest.approx(cli["probabilities"], abs=1e-6)
    assert [f for f in row["findings"].split("|") if f] == cli["findings"]
    assert [n for n in names if row[f"above_{n}"] == 1] == cli["above_threshold"]
    ood = cli["out_of_distribution"]
    assert bool(row["ood"]) == ood["flag"] and (row["ood_reason"] or None) == ood["reason"]
    assert float(row["ood_score"]) == pytest.approx(ood["score"], abs=1e-6)
    # above threshold: exactly the probabilities at or above their thresholds; the findings
    # are those, unless the image is out of distribution (then withheld, with the reason)
    assert cli["above_threshold"] == [n for n in names if cli["probabilities"][n] >= cli["thresholds"][n]]
    assert cli["findings"] == ([] if ood["flag"] else cli["above_threshold"])
    assert (cli["findings_withheld"] is not None) == ood["flag"]


def test_the_ood_flag_means_the_same_in_evaluate_and_predict(tiny_trained, tmp_path, capsys):
    """A DICOM whose header is not a chest radiograph is flagged with that reason by both."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    src = get_testdata_file("MR_small.dcm")
    if src is None:
        pytest.skip("pydicom's test files are not installed")
    from medxfer.model_io import TrainedModel
    from medxfer.records import predict_records

    model = TrainedModel.load(tiny_trained / "m")
    X = np.zeros((1, model.estimator.n_features_in_), np.float32)
    rec = predict_records(model, X, [src])[0]
    assert rec.out_of_distribution.flag and "Modality is MR" in rec.out_of_distribution.reason
    assert pydicom.dcmread(src).Modality == "MR"
