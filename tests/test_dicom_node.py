"""The DICOM node (medxfer.dicom_node): against a real PACS (Debian's Orthanc, started here on
loopback ports), through a restart, and with the bad input a hospital network sends."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("pynetdicom")
hd = pytest.importorskip("highdicom")

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import (ComprehensiveSRStorage, DigitalXRayImageStorageForPresentation,  # noqa: E402
                                  MRImageStorage, Verification)

ORTHANC = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)
DSRDUMP = shutil.which("dsrdump")
MR = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm"
#: Debian's orthanc-dicomweb: Orthanc's DICOMweb (STOW-RS) plugin.
DICOMWEB = next((p for p in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",) if Path(p).is_file()), None)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_dx(png: Path, out: Path, *, patient="MX-TEST-1", study=None) -> Path:
    """A DX (for presentation) of a bundled radiograph, as a modality would send it."""
    from PIL import Image
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    px = np.asarray(Image.open(png).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "Test^Medxfer", patient, "F", "19600101"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261202", "120000", "A1", "1"
    ds.ReferringPhysicianName, ds.Manufacturer = "", "test"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.SeriesNumber, ds.InstanceNumber, ds.PresentationIntentType = 1, 1, "FOR PRESENTATION"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelData = px.tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


def store(host: str, port: int, aet: str, *items, calling: str = "TESTSCU") -> list[int]:
    """C-STORE each Dataset or file in one association; the status of each."""
    ae = AE(ae_title=calling)
    for cx in (DigitalXRayImageStorageForPresentation, MRImageStorage, ComprehensiveSRStorage):
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):  # each its own context
            ae.add_requested_context(cx, syntax)
    assoc = ae.associate(host, port, ae_title=aet)
    assert assoc.is_established, f"no association with {aet}@{host}:{port}"
    try:
        return [int(assoc.send_c_store(x).Status) for x in items]
    finally:
        assoc.release()


def echo(port: int, aet: str = "MEDXFER") -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return False
    ok = int(assoc.send_c_echo().Status) == 0
    assoc.release()
    return ok


def wait_for(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    raise TimeoutError(what)


class Node:
    """`medxfer dicom-node` as a process (so it can be killed)."""

    def __init__(self, model, spool, send_to, log: Path, *extra):
        self.port = _port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medxfer", "dicom-node", str(model), "--spool", str(spool),
             "--port", str(self.port), "--send-to", send_to, *extra],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=os.environ.copy())
        wait_for(lambda: self.proc.poll() is not None or echo(self.port), 180, "the node to answer C-ECHO")
        assert self.proc.poll() is None, log.read_text()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def orthanc(tmp_path):
    if ORTHANC is None:
        pytest.skip("Orthanc not installed (.ci/run installs Debian's orthanc)")
    http, dicom, node_port = _port(), _port(), _port()
    cfg = {"Name": "medxfer-test", "StorageDirectory": str(tmp_path / "orthanc-db"),
           "IndexDirectory": str(tmp_path / "orthanc-db"), "HttpPort": http, "DicomPort": dicom,
           "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
           "HttpServerEnabled": True, "DicomServerEnabled": True, "Plugins": [DICOMWEB] if DICOMWEB else [],
           "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
           "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
           "DicomModalities": {"medxfer": ["MEDXFER", "127.0.0.1", node_port]},
           "DicomScuTimeout": 30, "StableAge": 1}
    conf = tmp_path / "orthanc.json"
    conf.write_text(json.dumps(cfg))
    proc = subprocess.Popen([ORTHANC, str(conf)], stdout=open(tmp_path / "orthanc.log", "wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"

    def up():
        try:
            with urllib.request.urlopen(url + "/system", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(lambda: proc.poll() is not None or up(), 60, "Orthanc to start")
    assert proc.poll() is None, (tmp_path / "orthanc.log").read_text()
    yield {"url": url, "dicom": dicom, "node_port": node_port}
    proc.terminate()
    proc.wait(20)


def rest(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read()
    return raw if path.endswith("/file") else json.loads(raw)


def srs_of_study(url, study_uid, modality="SR"):
    found = rest(url, "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid,
                                                                   "Modality": modality}})
    return [pydicom.dcmread(__import__("io").BytesIO(rest(url, f"/instances/{i}/file"))) for i in found]


def sr_values(sr) -> dict:
    """{finding: (probability, threshold, call)} and the OOD items of one of our SRs."""
    out, ood = {}, {}
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CONTAINER":
            kids = {k.ConceptNameCodeSequence[0].CodeMeaning: k for k in item.ContentSequence}
            out[name] = (float(kids["Probability"].MeasuredValueSequence[0].NumericValue),
                         float(kids["Decision threshold"].MeasuredValueSequence[0].NumericValue),
                         kids["At or above threshold"].ConceptCodeSequence[0].CodeMeaning)
        elif name.startswith("Out-of-distribution reason"):
            ood["reason"] = item.TextValue
        elif name == "Out of distribution":
            ood["flag"] = item.ConceptCodeSequence[0].CodeMeaning
        elif name == "Notice":
            ood["notice"] = item.TextValue
    return out, ood


@pytest.mark.slow
def test_orthanc_round_trip_and_a_brain_mr(orthanc, tiny_trained, tmp_path, capsys):
    """Orthanc sends a DX to the node; the SR comes back under the same study, its
    probabilities equal `medxfer predict` on the file; a brain MR comes back flagged."""
    from medxfer.cli import main

    model = tiny_trained / "m"
    dx = make_dx(sorted((tiny_trained / "cxr" / "images").glob("*.png"))[0], tmp_path / "dx.dcm")
    url = orthanc["url"]
    assert store("127.0.0.1", orthanc["dicom"], "ORTHANC", pydicom.dcmread(dx), pydicom.dcmread(MR)) == [0, 0]
    node = None
    try:
        spool = tmp_path / "spool"
        # the node binds the port Orthanc's configuration lists for it
        node = Node.__new__(Node)
        node.port = orthanc["node_port"]
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "medxfer", "dicom-node", str(model), "--spool", str(spool),
             "--port", str(node.port), "--send-to", f"ORTHANC@127.0.0.1:{orthanc['dicom']}", "--cam"],
            stdout=open(tmp_path / "node.log", "ab"), stderr=subprocess.STDOUT, env=os.environ.copy())
        wait_for(lambda: node.proc.poll() is not None or echo(node.port), 180, "the node")
        assert node.proc.poll() is None, (tmp_path / "node.log").read_text()
        assert rest(url, "/modalities/medxfer/echo", {}) == {}  # Orthanc reaches the node
        for f in (dx, MR):
            uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
            iid = rest(url, "/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": uid}})[0]
            rest(url, "/modalities/medxfer/store", {"Resources": [iid], "Synchronous": True})
        source = pydicom.dcmread(dx)
        sr = wait_for(lambda: srs_of_study(url, source.StudyInstanceUID), 120, "the SR in Orthanc")[0]
        mr_src = pydicom.dcmread(MR, stop_before_pixels=True)
        mr_sr = wait_for(lambda: srs_of_study(url, mr_src.StudyInstanceUID), 120, "the MR's SR")[0]
        wait_for(lambda: not list((spool / "outbox").glob("*.dcm")), 120, "every result sent")
    finally:
        if node is not None:
            node.stop()
    log = (tmp_path / "node.log").read_text()

    # the SR: same study and patient, the source referenced, read by highdicom
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    parsed = hd.sr.ComprehensiveSR.from_dataset(sr)
    assert parsed.SeriesDescription == "medxfer AI result - not a diagnosis"
    values, ood = sr_values(sr)
    assert ood["flag"] == "No" and "not a medical device" in ood["notice"]
    assert main(["-q", "predict", str(model), str(dx), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)["predictions"][0]
    for name, p in rec["probabilities"].items():
        got_p, got_t, call = values[name]
        assert got_p == pytest.approx(p, abs=1e-6) and got_t == pytest.approx(rec["thresholds"][name], abs=1e-6)
        assert call == ("Present" if name in rec["above_threshold"] else "Absent")
    if DSRDUMP:
        path = tmp_path / "sr.dcm"
        sr.save_as(path)
        dump = subprocess.run([DSRDUMP, str(path)], capture_output=True, text=True, check=True).stdout
        assert "Probability" in dump and "AI result (medxfer), not a diagnosis" in dump

    # --cam: one Secondary Capture per finding at or above threshold, in a series of its own
    assert rec["findings"]  # the tiny model calls some on this image: the overlays are checked
    caps = srs_of_study(url, source.StudyInstanceUID, "OT")
    assert sorted(c.ImageComments.split(" (medxfer)")[0].removeprefix("Grad-CAM of ") for c in caps) \
        == sorted(rec["findings"])
    assert {c.SeriesInstanceUID for c in caps} != {sr.SeriesInstanceUID, source.SeriesInstanceUID}
    assert all(c.PhotometricInterpretation == "RGB" and c.pixel_array.ndim == 3 for c in caps)
    assert not srs_of_study(url, mr_src.StudyInstanceUID, "OT")  # no overlay of a brain

    # the brain MR: an SR that says out of distribution, no finding called
    mvalues, mood = sr_values(mr_sr)
    assert mood["flag"] == "Yes" and "Modality is MR" in mood["reason"]
    assert {c for _, _, c in mvalues.values()} == {"Withheld: out of distribution"}
    # the log names studies by hash, never the patient; nothing received is left
    assert "MX-TEST-1" not in log and "Test^Medxfer" not in log and "study-" in log
    assert not list((spool / "incoming").iterdir()) and not list((spool / "processed").iterdir())
    assert not list((spool / "outbox").iterdir())


@pytest.mark.slow
def test_a_node_killed_after_acknowledging_sends_after_a_restart(orthanc, tiny_trained, tmp_path):
    model, spool = tiny_trained / "m", tmp_path / "spool"
    dx = make_dx(sorted((tiny_trained / "cxr" / "images").glob("*.png"))[1], tmp_path / "dx.dcm")
    dead = f"ORTHANC@127.0.0.1:{_port()}"  # nothing listens there: the report cannot go out
    node = Node(model, spool, dead, tmp_path / "node.log")
    try:
        assert store("127.0.0.1", node.port, "MEDXFER", pydicom.dcmread(dx)) == [0]  # acknowledged
        wait_for(lambda: list((spool / "outbox").glob("*.dcm")), 60, "the report in the outbox")
        wait_for(lambda: "could not send a report" in (tmp_path / "node.log").read_text(), 60,
                 "a failed send")  # the PACS is unreachable: the report is kept
    finally:
        node.kill()  # between acknowledge and send
    assert list((spool / "processed").glob("*.dcm"))  # the image is kept until its report is out
    node = Node(model, spool, f"ORTHANC@127.0.0.1:{orthanc['dicom']}", tmp_path / "node.log")
    try:
        study = pydicom.dcmread(dx, stop_before_pixels=True).StudyInstanceUID
        sr = wait_for(lambda: srs_of_study(orthanc["url"], study), 120, "the SR after the restart")
        assert len(sr) == 1
        wait_for(lambda: not list((spool / "processed").iterdir()), 30, "the image deleted")
    finally:
        node.stop()
    assert (tmp_path / "node.log").read_text().count("sent\n") == 1


@pytest.mark.slow
def test_reports_by_stow_rs(orthanc, tiny_trained, tmp_path):
    """--dicomweb: the report goes to Orthanc's DICOMweb plugin by STOW-RS."""
    if DICOMWEB is None:
        pytest.skip("Orthanc's DICOMweb plugin not installed (.ci/run installs orthanc-dicomweb)")
    from medxfer.dicom_node import DicomNode
    from medxfer.settings import DicomNodeSettings

    node = DicomNode(tiny_trained / "m", DicomNodeSettings(
        port=_port(), spool=str(tmp_path / "spool"), dicomweb=orthanc["url"] + "/dicom-web"),
        engine="torch").start()
    try:
        dx = make_dx(sorted((tiny_trained / "cxr" / "images").glob("*.png"))[4], tmp_path / "dx.dcm")
        assert store("127.0.0.1", node.settings.port, "MEDXFER", pydicom.dcmread(dx)) == [0]
        study = pydicom.dcmread(dx, stop_before_pixels=True).StudyInstanceUID
        sr = wait_for(lambda: srs_of_study(orthanc["url"], study), 120, "the SR by STOW-RS")[0]
        assert sr.StudyInstanceUID == study and node.counts["sent"] == 1
    finally:
        node.stop()


@pytest.fixture
def node_in_process(tiny_trained, tmp_path):
    from medxfer.dicom_node import DicomNode
    from medxfer.settings import DicomNodeSettings

    made = []

    def make(**kw):
        s = DicomNodeSettings(**({"port": _port(), "spool": str(tmp_path / f"spool{len(made)}"),
                                  "send_to": f"PACS@127.0.0.1:{_port()}"} | kw))
        made.append(DicomNode(tiny_trained / "m", s, engine="torch").start())
        return made[-1]

    yield make
    for n in made:
        n.stop()


@pytest.mark.slow
def test_bad_input_gets_a_status_and_the_association_goes_on(node_in_process, tiny_trained, tmp_path):
    from pydicom.uid import generate_uid

    node = node_in_process()
    dx = make_dx(sorted((tiny_trained / "cxr" / "images").glob("*.png"))[2], tmp_path / "dx.dcm")
    report = pydicom.Dataset()  # a report: no pixel data
    report.SOPClassUID, report.SOPInstanceUID = ComprehensiveSRStorage, generate_uid()
    report.StudyInstanceUID, report.Modality = generate_uid(), "SR"
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    # a file whose dataset does not parse (a valid meta, then junk)
    junk = tmp_path / "junk.dcm"
    good = pydicom.dcmread(dx)
    good.SOPInstanceUID = good.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    good.save_as(junk, enforce_file_format=True)
    raw = junk.read_bytes()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")  # (0002,0000) holds the meta's length
    # an element that claims 0x4000 bytes and holds 9: the dataset cannot be read
    junk.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\x00\x40not-a-uid")
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    try:
        statuses = store("127.0.0.1", node.settings.port, "MEDXFER", report, junk, pydicom.dcmread(dx))
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert statuses[0] == 0x0122 and statuses[1] == 0xC210 and statuses[2] == 0
    wait_for(lambda: node.counts["processed"] == 1, 60, "the good image processed")
    # a compressed image (JPEG-LS) is decoded; a brain MR's report says out of distribution
    mr = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small_jpeg_ls_lossless.dcm"
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MRImageStorage, pydicom.dcmread(mr).file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title="MEDXFER")
    assert int(assoc.send_c_store(pydicom.dcmread(mr)).Status) == 0
    assoc.release()
    wait_for(lambda: node.counts["processed"] == 2, 60, "the MR processed")
    reports = [pydicom.dcmread(f) for f in node.spool.outbox.glob("*.dcm")]
    values, ood = sr_values(next(r for r in reports if r.StudyInstanceUID == pydicom.dcmread(mr).StudyInstanceUID))
    assert ood["flag"] == "Yes" and values  # analysed (decoded), flagged, not "not analysed"

    # an image no report can be made for is kept in failed/ with the reason, not retried
    node.process = lambda path: (_ for _ in ()).throw(RuntimeError("highdicom refused it"))
    assert store("127.0.0.1", node.settings.port, "MEDXFER", make_dx(
        sorted((tiny_trained / "cxr" / "images").glob("*.png"))[5], tmp_path / "dx5.dcm")) == [0]
    kept = wait_for(lambda: list(node.spool.failed.glob("*.dcm")), 30, "the image in failed/")
    assert "highdicom refused it" in kept[0].with_suffix(".txt").read_text()
    assert not list(node.spool.incoming.glob("*.dcm"))

    small = node_in_process(max_dataset_mb=0.001)
    assert store("127.0.0.1", small.settings.port, "MEDXFER", pydicom.dcmread(dx)) == [0xA700]

    picky = node_in_process(allow_ae="MODALITY1")
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", picky.settings.port, ae_title="MEDXFER")
    assert assoc.is_rejected
    assert store("127.0.0.1", picky.settings.port, "MEDXFER", pydicom.dcmread(dx), calling="MODALITY1") == [0]


@pytest.mark.slow
def test_four_senders_of_25_images_are_all_answered(node_in_process, tiny_trained, tmp_path):
    node = node_in_process()
    pngs = sorted((tiny_trained / "cxr" / "images").glob("*.png"))
    files = [make_dx(pngs[i % len(pngs)], tmp_path / f"dx{i}.dcm", study=None) for i in range(100)]

    def send(k):
        return store("127.0.0.1", node.settings.port, "MEDXFER",
                     *[pydicom.dcmread(f) for f in files[25 * k:25 * (k + 1)]], calling=f"MOD{k}")

    with ThreadPoolExecutor(4) as pool:
        statuses = [s for part in pool.map(send, range(4)) for s in part]
    assert statuses == [0] * 100
    wait_for(lambda: node.counts["processed"] == 100, 300, "100 reports")
    assert len(list((node.spool.outbox).glob("*.dcm"))) == 100  # the PACS is down: all kept


def test_the_report_holds_the_record_and_refuses_nothing_silently(tiny_trained, tmp_path):
    """build_sr on a record: every finding's probability, threshold and call; the notice;
    derived UIDs, so a second processing gives the same report."""
    from medxfer.dicom_node import Destination, NodeError, build_sr, study_tag
    from medxfer.model_io import TrainedModel
    from medxfer.predictor import Predictor

    model = TrainedModel.load(tiny_trained / "m")
    dx = make_dx(sorted((tiny_trained / "cxr" / "images").glob("*.png"))[0], tmp_path / "dx.dcm")
    rec = Predictor(model, engine="torch").record(str(dx))
    src = pydicom.dcmread(dx, stop_before_pixels=True)
    a = build_sr(src, rec, model_name="m", model_sha256=model.sha256)
    b = build_sr(src, rec, model_name="m", model_sha256=model.sha256)
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.StudyInstanceUID == src.StudyInstanceUID
    values, ood = sr_values(a)
    assert set(values) == set(rec.probabilities) and ood["flag"] == "No"
    for n, (p, t, call) in values.items():
        assert p == pytest.approx(rec.probabilities[n]) and t == pytest.approx(rec.thresholds[n])
    failed = build_sr(src, None, model_name="m", model_sha256=model.sha256, error="truncated pixel data")
    assert any(i.ConceptNameCodeSequence[0].CodeMeaning == "Not analysed" for i in failed.ContentSequence)
    assert study_tag("1.2.3") == study_tag("1.2.3") != study_tag("1.2.4") and "1.2.3" not in study_tag("1.2.3")
    for bad in ("ORTHANC", "ORTHANC@host", "@h:1", "A" * 17 + "@h:1", "X@h:0"):
        with pytest.raises(NodeError):
            Destination.parse(bad)


def test_the_cli_refuses_what_cannot_work(tiny_trained, tmp_path, capsys):
    from medxfer.cli import main

    m = str(tiny_trained / "m")
    for args, said in [
            ([], "give --send-to AET@HOST:PORT"),
            (["--send-to", "ORTHANC"], "write it AET@HOST:PORT"),
            (["--send-to", "X@h:1", "--ae-title", "A" * 17], "an AE title is 1 to 16"),
            (["--send-to", "X@h:1", "--tls-cert", str(tmp_path / "c.pem")], "needs both"),
            (["--send-to", "X@h:1", "--tls-cert", "c.pem", "--tls-key", "k.pem"], "no such file"),
            (["--send-to", "X@h:1", "--port", "0"], "--port must be")]:
        assert main(["dicom-node", m, "--spool", str(tmp_path / "s"), *args]) == 2, args
        assert said in capsys.readouterr().err, args
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["dicom-node", m, "--send-to", "X@h:1", "--port", str(port)]) == 2
        assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed (to make a test certificate)")
def test_tls_associations_only(node_in_process, tiny_trained, tmp_path):
    """--tls-cert/--tls-key: a TLS client is answered; a plain one gets no association."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    node = node_in_process(tls_cert=str(cert), tls_key=str(key))
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    ctx.check_hostname = False
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title="MEDXFER", tls_args=(ctx, None))
    assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    assoc.release()
    assert not echo(node.settings.port)


def test_the_spool_recovers_from_a_stop_at_any_point(tmp_path):
    """A sidecar without its result: the image goes back to incoming/; an image no sidecar
    names has had all its results sent: it is removed; a complete result stays to be sent."""
    from medxfer.dicom_node import Spool

    sp = Spool(tmp_path / "spool")
    (sp.processed / "a.dcm").write_bytes(b"a")  # results not all written
    (sp.outbox / "r1.json").write_text(json.dumps({"source": "a.dcm"}))
    (sp.processed / "b.dcm").write_bytes(b"b")  # its result is written, waiting to be sent
    (sp.outbox / "r2.json").write_text(json.dumps({"source": "b.dcm"}))
    (sp.outbox / "r2.dcm").write_bytes(b"sr")
    (sp.processed / "c.dcm").write_bytes(b"c")  # every result sent
    assert sp.recover() == {"reprocess": 1, "already_sent": 1}
    assert (sp.incoming / "a.dcm").is_file() and not (sp.outbox / "r1.json").exists()
    assert (sp.processed / "b.dcm").is_file() and (sp.outbox / "r2.dcm").is_file()
    assert not (sp.processed / "c.dcm").exists()
    assert oct((tmp_path / "spool" / "incoming").stat().st_mode & 0o777) == "0o700"
    (sp.processed / "d.dcm").write_bytes(b"d")  # every result sent, under --keep-received
    assert sp.recover(keep=True) == {"reprocess": 0, "already_sent": 1}
    assert (sp.kept / "d.dcm").read_bytes() == b"d"
