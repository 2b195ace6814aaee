"""A DICOM node: a Storage SCP that answers each radiograph with a Structured Report.

`medxfer dicom-node MODEL --spool DIR --send-to AET@HOST:PORT` listens for C-STORE (and
C-ECHO) on pynetdicom. For each image it receives it

1. writes the dataset into the spool (``incoming/``, fsynced, renamed) and only then answers
   the C-STORE with success: an image acknowledged is on disk;
2. predicts with the model's one prediction record (medxfer.records: probabilities,
   thresholds, findings, the out-of-distribution flag and reason, the DICOM header check);
3. writes a DICOM Comprehensive SR (highdicom) into ``outbox/``: in the source's study (Study
   Instance UID and patient module copied from it, the source instance referenced), naming
   the algorithm (medxfer, its version, the model's name and weights hash), one container per
   finding (probability, threshold, present/absent, or withheld when the image is out of
   distribution), the flag with its reason, and the research-tool notice;
   With ``--cam``, a Secondary Capture of the Grad-CAM overlay of each finding at or above
   threshold goes with it, in a series of its own in the same study;
4. sends the SR with C-STORE to ``--send-to`` (or STOW-RS to ``--dicomweb``), retrying with
   exponential backoff; what cannot be sent stays in ``outbox/``. The received image is
   deleted once its SR is out (``--keep-received`` moves it to ``kept/`` instead).

A node killed at any point and started again on the same spool processes what is in
``incoming/`` and sends what is in ``outbox/``. The SR's UIDs are derived from the source
instance and the model, so an image processed twice gives the same SR (the PACS keeps one).

Refusals: a dataset without pixel data (a report, a plan, a presentation state) gets status
0x0122 (SOP class not supported) and a log line; one that does not parse gets 0xC210; one
larger than ``--max-dataset-mb`` gets 0xA700; the association goes on. An image that is not
a chest radiograph (by header or by features) gets an SR that says so, without findings.

Safe by default: binds 127.0.0.1; ``--allow-ae`` limits calling AE titles (a title is a
claim, not a proof: use TLS or a firewall where that matters); TLS for incoming
associations with ``--tls-cert``/``--tls-key`` (client certificates are not checked;
reports go out in the clear); the spool is readable by the node's user only; the log names
studies by a hash of the Study Instance UID, never by patient. ``--max-dataset-mb`` is
checked once pynetdicom holds the dataset in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import MedxferError
from .settings import NOTICE, DicomNodeSettings

log = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 Annex B.2.3).
SUCCESS, NOT_AN_IMAGE, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0x0122, 0xC210, 0xA700
#: Codes of our own, for the SR's concepts that no standard vocabulary names.
SCHEME = "99MEDXFER"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


class NodeError(MedxferError):
    """The node cannot start or send as configured."""


def study_tag(study_uid: str | None) -> str:
    """How the log names a study: a hash of its Study Instance UID, never the patient."""
    return "study-" + hashlib.sha256(str(study_uid or "none").encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """AET@HOST:PORT."""
        try:
            aet, rest = text.split("@", 1)
            host, port = rest.rsplit(":", 1)
            port_n = int(port)
        except ValueError:
            raise NodeError(f"--send-to {text!r}: write it AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242") from None
        check_ae_title(aet, "--send-to")
        if not host or not 0 < port_n < 65536:
            raise NodeError(f"--send-to {text!r}: needs a host and a port in 1..65535")
        return cls(aet, host, port_n)


def check_ae_title(aet: str, option: str) -> str:
    if not aet or len(aet) > 16 or "\\" in aet or aet != aet.strip() or not aet.isprintable():
        raise NodeError(f"{option} {aet!r}: an AE title is 1 to 16 printable characters, no "
                        "backslash, no leading or trailing space")
    return aet


# -- the structured report -------------------------------------------------------------------

def _concept(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def build_sr(source, record, *, model_name: str, model_sha256: str, error: str | None = None):
    """The Comprehensive SR answering ``source`` (a pydicom Dataset) with ``record`` (a
    :class:`medxfer.records.PredictionRecord`; None with ``error`` when the image could not
    be analysed)."""
    from highdicom.sr import (CodeContentItem, CodedConcept, ComprehensiveSR, ContainerContentItem,
                              ImageContentItem, NumContentItem, TextContentItem)
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    contains = "CONTAINS"
    unit = CodedConcept("1", "UCUM", "no units")
    items = [
        TextContentItem(_concept("notice", "Notice"), NOTICE + " This is the output of an AI "
                        "algorithm, not a diagnosis.", contains),
        CodeContentItem(codes.DCM.AlgorithmFamily, codes.DCM.ArtificialIntelligence, contains),
        TextContentItem(codes.DCM.AlgorithmName, f"medxfer model {model_name}", contains),
        TextContentItem(codes.DCM.AlgorithmVersion, f"medxfer {__version__}", contains),
        TextContentItem(_concept("model-sha256", "Model weights sha256"), model_sha256, contains),
        ImageContentItem(codes.DCM.SourceOfMeasurement, source.SOPClassUID, source.SOPInstanceUID,
                         relationship_type=contains),
    ]
    if record is None:
        items.append(TextContentItem(_concept("not-analysed", "Not analysed"), error or "unknown", contains))
    else:
        o = record.out_of_distribution
        items.append(CodeContentItem(_concept("ood", "Out of distribution"),
                                     codes.SCT.Yes if o.flag else codes.SCT.No, contains))
        if o.flag:
            items.append(TextContentItem(_concept("ood-reason", "Out-of-distribution reason"),
                                         o.reason or "unlike the training images", contains))
        if o.score is not None:
            items.append(NumContentItem(_concept("ood-score", "Out-of-distribution score"), o.score, unit,
                                        relationship_type=contains))
            items.append(NumContentItem(_concept("ood-threshold", "Out-of-distribution threshold"),
                                        o.threshold, unit, relationship_type=contains))
        items.append(TextContentItem(_concept("threshold-rule", "Threshold rule"), record.threshold_rule,
                                     contains))
        withheld = _concept("withheld", "Withheld: out of distribution")
        for name, p in record.probabilities.items():
            box = ContainerContentItem(_concept(name, name), relationship_type=contains)
            call = withheld if o.flag else (codes.SCT.Present if name in record.above_threshold
                                            else codes.SCT.Absent)
            box.ContentSequence = [
                NumContentItem(_concept("probability", "Probability"), p, unit, relationship_type=contains),
                NumContentItem(_concept("threshold", "Decision threshold"), record.thresholds[name], unit,
                               relationship_type=contains),
                CodeContentItem(_concept("at-or-above-threshold", "At or above threshold"), call, contains),
            ]
            items.append(box)
    # a title of our own: the tree is not TID 1500's, and must not be read as a measurement report
    root = ContainerContentItem(_concept("ai-result", "AI result (medxfer), not a diagnosis"))
    root.ContentSequence = items
    seed = [str(source.SOPInstanceUID), model_sha256]
    sr = ComprehensiveSR(
        evidence=[source], content=root,
        series_instance_uid=generate_uid(entropy_srcs=[str(source.StudyInstanceUID), model_sha256, "series"]),
        series_number=990, sop_instance_uid=generate_uid(entropy_srcs=seed + ["sr"]),
        instance_number=int(source.get("InstanceNumber") or 1), manufacturer="medxfer")
    sr.SeriesDescription = "medxfer AI result - not a diagnosis"
    return sr


def build_cam_sc(source, rgb, finding: str, *, model_sha256: str, number: int = 1):
    """A Secondary Capture of one finding's Grad-CAM overlay (RGB in [0, 1]) in a series of
    its own in the source's study."""
    import numpy as np
    from highdicom.sc import SCImage
    from pydicom.uid import generate_uid

    orientation = tuple(source.get("PatientOrientation") or ()) or ("L", "F")  # frontal display
    sc = SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=(np.clip(rgb, 0, 1) * 255).round().astype(np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=generate_uid(entropy_srcs=[str(source.StudyInstanceUID), model_sha256, "cam"]),
        series_number=991, sop_instance_uid=generate_uid(
            entropy_srcs=[str(source.SOPInstanceUID), model_sha256, "cam", finding]),
        instance_number=number, manufacturer="medxfer", patient_orientation=orientation[:2])
    sc.SeriesDescription = "medxfer Grad-CAM - not a diagnosis"
    sc.ImageComments = (f"Grad-CAM of {finding} (medxfer): where the model's score for it rises "
                        "most; not a segmentation, not a diagnosis")
    sc.DerivationDescription = f"Grad-CAM of the medxfer model's {finding} score over the source image"
    sc.BurnedInAnnotation = "NO"
    return sc


# -- the spool ---------------------------------------------------------------------------------

def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """incoming/ (acknowledged images), processed/ (images whose SR waits to be sent),
    outbox/ (SRs to send, each with a .json naming its source), kept/ (--keep-received),
    failed/ (images no report could be made for, each with a .txt saying why: kept, not
    retried), sent.jsonl (what went out, by study hash)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("incoming", "processed", "outbox", "kept", "failed"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(self.root / sub, 0o700)  # patient data: the node's user only
        self.incoming, self.processed = self.root / "incoming", self.root / "processed"
        self.outbox, self.kept, self.failed = self.root / "outbox", self.root / "kept", self.root / "failed"

    def receive(self, data: bytes, sop_uid: str) -> Path:
        path = self.incoming / f"{hashlib.sha256(sop_uid.encode()).hexdigest()[:24]}.dcm"
        _write_atomic(path, data)
        return path

    def sources(self) -> dict[Path, str | None]:
        """Each result's sidecar in outbox/ and the received image (in processed/) it names."""
        return {m: json.loads(m.read_text()).get("source") for m in self.outbox.glob("*.json")}

    def recover(self, keep: bool = False) -> dict:
        """Put the spool in order after a stop at any point. Results are published sidecar
        first, then the image moves to processed/, then the result files: a sidecar without
        its result means the image's results were not all written (its image goes back to
        incoming/ and is processed again: the UIDs are the same); an image in processed/ that
        no sidecar names has had every result sent (it is deleted, or moved to kept/ with
        ``keep``)."""
        redo, done = 0, 0
        sources = self.sources()
        for meta, source in list(sources.items()):
            if not meta.with_suffix(".dcm").is_file():
                src = self.processed / (source or "")
                if source and src.is_file():
                    os.replace(src, self.incoming / src.name)
                    redo += 1
                meta.unlink()
                del sources[meta]
        named = set(sources.values())
        for img in self.processed.glob("*.dcm"):
            if img.name not in named:
                done += 1
                if keep:
                    os.replace(img, self.kept / img.name)
                else:
                    img.unlink()
        return {"reprocess": redo, "already_sent": done}

    def waiting(self) -> list[Path]:
        return sorted(self.incoming.glob("*.dcm"), key=lambda p: p.stat().st_mtime)

    def results(self) -> list[Path]:
        return sorted(self.outbox.glob("*.dcm"), key=lambda p: p.stat().st_mtime)


# -- the node ----------------------------------------------------------------------------------

class DicomNode:
    """The Storage SCP, the worker that predicts and the sender; see the module docstring.
    ``start()`` returns once listening; ``stop()`` ends all three."""

    def __init__(self, model_dir, settings: DicomNodeSettings = DicomNodeSettings(), *,
                 engine: str = "auto", device: str = "auto", max_pixels: int | None = None):
        from .model_io import TrainedModel

        s = settings
        check_ae_title(s.ae_title, "--ae-title")
        self.allow = [check_ae_title(a.strip(), "--allow-ae") for a in (s.allow_ae or "").split(",") if a.strip()]
        self.dest = Destination.parse(s.send_to) if s.send_to else None
        if self.dest is None and not s.dicomweb:
            raise NodeError("give --send-to AET@HOST:PORT (C-STORE) or --dicomweb URL (STOW-RS): "
                            "where the reports go")
        if bool(s.tls_cert) != bool(s.tls_key):
            raise NodeError("TLS needs both --tls-cert and --tls-key")
        for option, f in (("--tls-cert", s.tls_cert), ("--tls-key", s.tls_key)):
            if f and not Path(f).is_file():
                raise NodeError(f"{option} '{f}': no such file")
        import socket

        try:  # before the model loads: a port in use is found in a second
            with socket.create_server((s.host, s.port)):
                pass
        except OSError as exc:
            raise NodeError(f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}; choose "
                            "another --port (or stop what holds it)") from exc
        self.settings = s
        self.spool = Spool(s.spool)
        self.model = TrainedModel.load(model_dir)
        self.model_name = Path(model_dir).resolve().name
        from .predictor import Predictor

        kw = {} if max_pixels is None else {"max_pixels": max_pixels}
        self.predictor = Predictor(self.model, engine=engine, device=device, **kw)
        self.limit = int(s.max_dataset_mb * 1024 * 1024)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.server = None
        self.counts = {"received": 0, "refused": 0, "processed": 0, "sent": 0, "send_failures": 0}

    # the SCP
    def _ssl(self):
        if not self.settings.tls_cert:
            return None
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return ctx

    def start(self) -> "DicomNode":
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per image is ours
        ae = AE(ae_title=self.settings.ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.allow:
            ae.require_calling_aet = self.allow
        ae.maximum_associations = 16
        self.server = ae.start_server((self.settings.host, self.settings.port), block=False,
                                      ssl_context=self._ssl(),
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store),
                                                    (evt.EVT_C_ECHO, lambda e: SUCCESS)])
        fixed = self.spool.recover(keep=self.settings.keep_received)
        if any(fixed.values()):
            log.info("spool recovered: %d image(s) to process again, %d whose reports were all "
                     "sent removed", fixed["reprocess"], fixed["already_sent"])
        for name, target in (("medxfer-node-worker", self._work), ("medxfer-node-sender", self._send_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("DICOM node %s listening on %s:%d; spool %s; reports to %s", self.settings.ae_title,
                 self.settings.host, self.settings.port, self.spool.root,
                 f"{self.dest.ae_title}@{self.dest.host}:{self.dest.port}" if self.dest else self.settings.dicomweb)
        self._wake.set()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.server is not None:
            self.server.shutdown()
        for t in self._threads:
            t.join(timeout=30)
        self.predictor.close()

    def _on_store(self, event) -> int:
        """Answer one C-STORE: success only once the dataset is on disk."""
        raw = event.request.DataSet
        size = len(raw.getvalue()) if raw is not None else 0
        calling = event.assoc.requestor.ae_title
        if size > self.limit:
            self.counts["refused"] += 1
            log.warning("refused a %.1f MB dataset from %s: above --max-dataset-mb %g",
                        size / 1e6, calling, self.settings.max_dataset_mb)
            return OUT_OF_RESOURCES
        try:
            ds = event.dataset
            sop_class, sop_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            study = study_tag(ds.get("StudyInstanceUID"))
            has_pixels = "PixelData" in ds and int(ds.Rows) > 0 and int(ds.Columns) > 0
        except Exception as exc:
            self.counts["refused"] += 1
            log.warning("refused a dataset from %s that does not parse: %s", calling, exc)
            return CANNOT_UNDERSTAND
        if not has_pixels:
            self.counts["refused"] += 1
            log.warning("refused %s from %s (%s): not an image (no pixel data); the node "
                        "answers images only", sop_class, calling, study)
            return NOT_AN_IMAGE
        try:
            self.spool.receive(event.encoded_dataset(include_meta=True), sop_uid)
        except OSError as exc:
            log.error("could not spool an image of %s: %s", study, exc)
            return OUT_OF_RESOURCES
        self.counts["received"] += 1
        log.info("received an image of %s from %s", study, calling)
        self._wake.set()
        return SUCCESS

    # the worker
    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                waiting = self.spool.waiting()
            except OSError as exc:  # e.g. a file taken away while listed: list again
                log.warning("could not list the spool (%s); trying again", exc)
                continue
            for path in waiting:
                if self._stop.is_set():
                    return
                try:
                    self.process(path)
                except OSError as exc:  # the disk, not the image: it stays, tried again later
                    log.error("could not write the answer to a received image (%s); it stays in "
                              "%s and is tried again", exc, self.spool.incoming)
                    self._stop.wait(5.0)
                except Exception as exc:  # the image's fault: kept in failed/, not retried
                    try:
                        failed = self.spool.failed / path.name
                        os.replace(path, failed)
                        failed.with_suffix(".txt").write_text(f"{type(exc).__name__}: {exc}\n")
                        log.exception("could not answer a received image; it is kept in %s", failed)
                    except OSError as exc2:
                        log.error("could not move a failed image to %s (%s); it stays in %s",
                                  self.spool.failed, exc2, self.spool.incoming)

    def process(self, path: Path) -> Path:
        """incoming image -> SR in outbox/ (with its sidecar) -> image to processed/."""
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study = study_tag(ds.get("StudyInstanceUID"))
        record, error = None, None
        try:
            record = self.predictor.record(str(path), name=str(ds.SOPInstanceUID))
        except (MedxferError, ValueError, RuntimeError) as exc:
            error = str(exc).replace(str(path), "the received image")
            log.warning("an image of %s could not be analysed: %s", study, error)
        sha = self.model.sha256 or "n/a"
        results = [build_sr(ds, record, model_name=self.model_name, model_sha256=sha, error=error)]
        if self.settings.cam and record is not None and record.findings:
            for finding in record.findings:  # empty when out of distribution
                try:
                    rgb, _ = self.predictor.cam_image(str(path), finding, "overlay")
                except Exception as exc:  # the report goes out without this overlay
                    log.warning("no Grad-CAM of %s for an image of %s: %s", finding, study, exc)
                    continue
                results.append(build_cam_sc(ds, rgb, finding, model_sha256=sha,
                                            number=list(record.probabilities).index(finding) + 1))
        done = self.spool.processed / path.name
        from io import BytesIO

        encoded = []
        for res in results:
            buf = BytesIO()
            res.save_as(buf, enforce_file_format=True)
            encoded.append((self.spool.outbox / f"{res.SOPInstanceUID}.dcm", buf.getvalue()))
        # published in an order a stop at any point can be recovered from (Spool.recover):
        # the sidecars, then the image to processed/, then the results the sender picks up
        for out, res in zip([o for o, _ in encoded], results):
            _write_atomic(out.with_suffix(".json"), json.dumps(
                {"source": done.name, "study": study, "sop_class": str(res.SOPClassUID)}).encode())
        os.replace(path, done)
        for out, data in encoded:
            _write_atomic(out, data)
        self.counts["processed"] += 1
        flag = record is not None and record.out_of_distribution.flag
        log.info("report for %s written%s%s", study, " (out of distribution)" if flag else "",
                 f" with {len(results) - 1} Grad-CAM image(s)" if len(results) > 1 else "")
        self._wake.set()
        return self.spool.outbox / f"{results[0].SOPInstanceUID}.dcm"

    # the sender
    def _send_loop(self) -> None:
        backoff: dict[str, tuple[float, float]] = {}  # SR file -> (next try, delay)
        while not self._stop.is_set():
            now = time.monotonic()
            results = self.spool.results()  # listed first: a result's sidecars precede it
            pending = Counter(self.spool.sources().values()) if results else Counter()
            for sr in results:
                if self._stop.is_set():
                    return
                when, delay = backoff.get(sr.name, (0.0, 0.0))
                if now < when:
                    continue
                try:
                    self.send(sr, pending)
                    backoff.pop(sr.name, None)
                except Exception as exc:
                    delay = min(self.settings.retry_max_s, max(1.0, 2 * delay))
                    backoff[sr.name] = (time.monotonic() + delay, delay)
                    self.counts["send_failures"] += 1
                    log.warning("could not send a report (%s); kept in %s, next try in %.0f s",
                                exc, self.spool.outbox, delay)
            self._stop.wait(0.5)

    def send(self, sr_path: Path, pending: Counter | None = None) -> None:
        """Send one result; on success remove it, its sidecar and, once it was the last
        result of its image, the received image (or keep it in kept/ with --keep-received).
        ``pending``: results not yet sent per received image (the sender counts them once
        per pass; :meth:`Spool.sources` by default). Raises on failure (the result stays)."""
        import pydicom

        meta_path = sr_path.with_suffix(".json")
        meta = json.loads(meta_path.read_text())  # written before the result (Spool.recover)
        if self.dest is not None:
            self._c_store(pydicom.dcmread(sr_path))
        else:
            self._stow(sr_path.read_bytes())
        if pending is None:
            pending = Counter(self.spool.sources().values())
        source = meta.get("source")
        pending[source] -= 1
        src = self.spool.processed / (source or "")
        if source and src.is_file() and pending[source] <= 0:  # its last result is out
            if self.settings.keep_received:
                os.replace(src, self.spool.kept / src.name)
            else:
                src.unlink()
        with open(self.spool.root / "sent.jsonl", "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "study": meta.get("study"),
                                "report": sr_path.stem}) + "\n")
        sr_path.unlink()
        meta_path.unlink(missing_ok=True)
        self.counts["sent"] += 1
        log.info("%s for %s sent", "report" if meta.get("sop_class") == COMPREHENSIVE_SR else "Grad-CAM image",
                 meta.get("study"))

    def _c_store(self, ds) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.settings.ae_title)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        assoc = ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.ae_title)
        if not assoc.is_established:
            raise NodeError(f"no association with {self.dest.ae_title}@{self.dest.host}:{self.dest.port}")
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        from pynetdicom.status import code_to_category

        code = getattr(status, "Status", None)
        if code is None or code_to_category(int(code)) not in ("Success", "Warning"):
            raise NodeError(f"{self.dest.ae_title} answered C-STORE with status "
                            f"{'none' if code is None else hex(code)}")

    def _stow(self, data: bytes) -> None:
        import urllib.request

        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode() + data + \
            f"\r\n--{boundary}--\r\n".encode()
        url = self.settings.dicomweb.rstrip("/") + "/studies"
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            if r.status not in (200, 202):
                raise NodeError(f"STOW-RS to {url} answered {r.status}")

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()


__all__ = ["DicomNode", "NodeError", "Spool", "build_sr", "study_tag"]
