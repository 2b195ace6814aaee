"""Feature extraction and the on-disk feature cache.

A features folder holds::

    manifest.json      what made the numbers: backbone, weights sha256, pooling,
                       preprocessing, dtype, dataset fingerprint, medxfer version
    rows.csv           the dataset table, one row per image, in feature order
    labels.npy         (n, n_labels) float32 labels, NaN = unknown
    shards/NNNNN.npy   (rows_in_shard, d) features; NNNNN.json beside it records the row
                       range, the sha256 of the .npy and the images that failed to decode
    problems.csv.gz    what reading the dataset reported (missing images, bad ages...) and,
                       once every shard is in, the images that could not be decoded

Shards are written atomically (temporary file, then rename) and a shard counts only when
its .json exists and the sha256 matches, so a run killed at any moment resumes from the
last complete shard and ends with the same arrays as an uninterrupted run. Shard ``i``
covers rows ``[i * shard_size, (i + 1) * shard_size)``, so ranks of a distributed job can
each write the shards ``i % world_size == rank`` into one folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from . import __version__
from .backbones import Backbone, BackboneIdentity
from .data import Dataset, Problem
from .engine import choose_engine, decode_workers, get_engine, node_cores, prepare
from .errors import FeatureCacheError, MedxferError
from .hashing import sha256_file
from .images import load_image
from .preprocess import Preprocessing
from .settings import DTYPES, FEATURES_FOLDER_MARKS, ExtractSettings

_X = ExtractSettings()  # the defaults

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
STORAGE_TYPES = {name: np.dtype(name).type for name in DTYPES}


class ImageRows(TorchDataset):
    """Decode-and-preprocess rows for a DataLoader. A file that cannot be read yields a
    zero tensor and its error text, so one bad file never stops a long extraction."""

    def __init__(self, paths: list[str], preprocessing: Preprocessing,
                 image_cache: str | Path | None = None, corruption=None,
                 max_pixels: int | None = _X.max_pixels):
        self.paths = list(paths)
        self.max_pixels = max_pixels
        self.preprocessing = preprocessing
        self.corruption = corruption  # a medxfer.corruptions.Corruption, after the resize
        pp = preprocessing
        self.cache = (Path(image_cache) / f"{pp.size}px-{pp.interpolation}") if image_cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def resized(self, path: str) -> np.ndarray:
        """Decoded and resized gray image, through the optional on-disk cache. Entries are
        exact float32 arrays keyed by path, size and mtime, so a hit gives the same numbers
        as decoding again."""
        if self.cache is None:
            return self.preprocessing.resize(load_image(path, self.max_pixels))
        try:
            st = os.stat(path)
        except OSError:
            return self.preprocessing.resize(load_image(path, self.max_pixels))  # the usual error
        key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        entry = self.cache / key[:2] / f"{key}.npy"
        if entry.is_file():
            try:
                return np.load(entry)
            except (OSError, ValueError):
                pass  # a torn entry: decode again and rewrite it
        arr = self.preprocessing.resize(load_image(path, self.max_pixels))
        entry.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(entry, lambda f: np.save(f, arr))
        return arr

    def __getitem__(self, i: int):
        """(row, input tensor, error text or "", pixel hash or "")."""
        try:
            gray = self.resized(self.paths[i])
            digest = pixel_hash(gray)  # before any corruption: the image as it was given
            if self.corruption is not None:
                gray = self.corruption(gray, key=os.path.basename(self.paths[i]))
            return i, self.preprocessing.to_tensor(gray), "", digest
        except MedxferError as exc:
            size = self.preprocessing.size
            return i, torch.zeros(3, size, size), str(exc), ""


def pixel_hash(gray: np.ndarray) -> str:
    """16 hex digits of blake2b over the decoded, resized gray pixels and their shape: the
    same image under two names (or re-encoded losslessly) has the same hash."""
    a = np.ascontiguousarray(gray, dtype=np.float32)
    return hashlib.blake2b(a.tobytes() + str(a.shape).encode(), digest_size=8).hexdigest()


def _collate(batch):
    idx, xs, errs, hashes = zip(*batch)
    return torch.tensor(idx), torch.stack(xs), list(errs), list(hashes)


@dataclass
class FeatureSet:
    """Cached features with the rows they belong to.

    Attributes
    ----------
    features : ndarray (n, d), the stored dtype (float16 by default).
    dataset : the rows (table, labels, label names) aligned with ``features``.
    manifest : dict read from manifest.json.
    skipped : images that could not be decoded, left out of ``features``.
    """

    features: np.ndarray
    dataset: Dataset
    manifest: dict
    skipped: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index) -> "FeatureSet":
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return replace(self, features=self.features[index], dataset=self.dataset.subset(index))

    @property
    def X(self) -> np.ndarray:
        return self.features.astype(np.float32)

    @property
    def Y(self) -> np.ndarray:
        return self.dataset.labels

    @classmethod
    def load(cls, folder: str | Path) -> "FeatureSet":
        folder = Path(folder)
        manifest = read_manifest(folder)
        try:
            n, shard_size = int(manifest["n_rows"]), int(manifest["shard_size"])
            label_names = tuple(manifest["label_names"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatureCacheError(f"'{folder / 'manifest.json'}' lacks or garbles {exc}; run "
                                    "`medxfer extract` again with --overwrite") from exc
        try:
            table = pd.read_csv(folder / "rows.csv", dtype={"patient_id": str, "image_id": str},
                                keep_default_na=True)
            labels = np.load(folder / "labels.npy", allow_pickle=False)
        except (OSError, EOFError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise FeatureCacheError(f"features folder '{folder}' is damaged: rows.csv or "
                                    f"labels.npy cannot be read ({exc}). Run `medxfer extract` "
                                    "again with --overwrite") from exc
        missing = {"image_id", "path", "patient_id"} - set(table.columns)
        if missing or labels.ndim != 2:
            raise FeatureCacheError(f"features folder '{folder}' is damaged: rows.csv lacks "
                                    f"{sorted(missing)} or labels.npy is not a 2-D array. Run "
                                    "`medxfer extract` again with --overwrite")
        if len(table) != n or len(labels) != n:
            raise FeatureCacheError(f"features folder '{folder}' is inconsistent: manifest says "
                                    f"{n} rows, rows.csv has {len(table)}, labels.npy {len(labels)}")
        chunks, skipped, pixels = [], [], []
        for i in range(_n_shards(n, shard_size)):
            info = _valid_shard(folder, i, loading=True)
            if info is None:
                raise FeatureCacheError(
                    f"features folder '{folder}' is incomplete: shard {i} "
                    f"({_shard_path(folder, i).name}) is missing or corrupt (checksum mismatch). "
                    "Run `medxfer extract` again with the same arguments: it recomputes that shard.")
            chunks.append(np.load(_shard_path(folder, i), allow_pickle=False))
            lo, hi = info.get("rows", [0, 0])
            got = info.get("pixel_hashes")  # absent in shards of earlier versions
            pixels.extend(got if isinstance(got, list) and len(got) == hi - lo else [""] * (hi - lo))
            skipped.extend((e["row"], Problem(UNREADABLE, e["path"], e["reason"]))
                           for e in info["errors"])
        feats = np.concatenate(chunks) if chunks else np.zeros((0, manifest["backbone"]["feature_dim"]))
        bad_rows = np.array([r for r, _ in skipped], dtype=int)
        keep = np.ones(n, dtype=bool)
        keep[bad_rows] = False
        problems = tuple(_read_problems(folder))
        boxes = pd.read_csv(folder / "boxes.csv", dtype={"image_id": str}) \
            if (folder / "boxes.csv").is_file() else None
        if len(pixels) == n:
            table["pixel_hash"] = pixels
        uncertain = folder / "uncertain.npy"
        ds = Dataset(table, labels, label_names, name=manifest.get("dataset_name", "dataset"),
                     problems=problems, task=manifest.get("task", "multilabel"), boxes=boxes,
                     format=manifest.get("dataset_format"),
                     patient_ids_from=manifest.get("patient_ids_from", "unknown"),
                     uncertain_policy=manifest.get("uncertain_policy"),
                     uncertain_mask=np.load(uncertain, allow_pickle=False) if uncertain.is_file() else None)
        fs = cls(feats, ds, manifest, [p for _, p in skipped])
        return fs.subset(keep) if not keep.all() else fs


def _n_shards(n: int, shard_size: int) -> int:
    return (n + shard_size - 1) // shard_size


def _shard_path(folder: Path, i: int) -> Path:
    return folder / "shards" / f"{i:05d}.npy"


def _valid_shard(folder: Path, i: int, *, loading: bool = False) -> dict | None:
    """The shard's record when it is complete and intact, else None (``loading``: no
    "will be recomputed" warning; the caller says what to do)."""
    npy, meta = _shard_path(folder, i), _shard_path(folder, i).with_suffix(".json")
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("sha256") != sha256_file(npy):
        if not loading:
            log.warning("shard %s is corrupt (checksum mismatch); it will be recomputed", npy)
        return None
    return info


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


PARTIAL = FEATURES_FOLDER_MARKS[1]  # "manifest.partial.json"
#: The problem kind of an image that could not be decoded at extraction.
UNREADABLE = "unreadable_image"


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeatureCacheError(f"'{path}' is not readable JSON ({exc}); delete the features "
                                "folder and run `medxfer extract` again") from exc
    if not isinstance(doc, dict):
        raise FeatureCacheError(f"'{path}' does not hold a JSON object; delete the features "
                                "folder and run `medxfer extract` again")
    return doc


def is_features_folder(path: str | Path) -> bool:
    """Whether ``path`` is a features folder, finished or not (an unfinished one is then
    named as such by :func:`read_manifest`, not taken for a dataset)."""
    path = Path(path)
    return path.is_dir() and any((path / n).exists() for n in FEATURES_FOLDER_MARKS)


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        if (folder / PARTIAL).is_file():
            raise FeatureCacheError(f"the extraction into '{folder}' did not finish; run the same "
                                    "`medxfer extract` command again to resume it")
        raise FeatureCacheError(f"'{folder}' is not a features folder (no manifest.json). "
                                "Make one with `medxfer extract DATA --out FOLDER`.")
    return _read_json(path)


def _read_problems(folder: Path) -> list[Problem]:
    path = folder / "problems.csv.gz"
    if not path.is_file():
        return []
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    # images that failed to decode are listed in the file for people, but the shards are
    # their record (FeatureSet.skipped): not read twice
    return [Problem(k, i, d) for k, i, d in zip(df["kind"], df["item"], df["detail"])
            if k != UNREADABLE]


def write_problems(path: Path, problems) -> None:
    pd.DataFrame([p.as_dict() for p in problems], columns=["kind", "item", "detail"]).to_csv(
        path, index=False)


def expected_manifest(dataset: Dataset, backbone: Backbone, *, dtype: str, shard_size: int,
                      corruption=None) -> dict:
    return {
        "corruption": None if corruption is None else corruption.as_dict(),
        "format_version": FORMAT_VERSION,
        "backbone": backbone.identity().as_dict(),
        "dtype": dtype,
        "n_rows": len(dataset),
        "shard_size": shard_size,
        "dataset_fingerprint": dataset.fingerprint(),
        "dataset_name": dataset.name,
        "dataset_format": dataset.format,
        # what the rows' patient IDs are (metadata, or stand-ins from file names) and the
        # uncertain-label policy their labels were read with: recorded, not compared (the
        # fingerprint covers the labels)
        "patient_ids_from": dataset.patient_ids_from,
        "uncertain_policy": dataset.uncertain_policy,
        "label_names": list(dataset.label_names),
        "task": dataset.task,
    }


# Keys whose change makes old features stale. medxfer's version is recorded, not compared:
# a release that changes the numbers bumps FORMAT_VERSION.
_IDENTITY_KEYS = ("format_version", "backbone", "dtype", "n_rows", "shard_size",
                  "dataset_fingerprint", "label_names", "task", "corruption")


def manifest_mismatch(have: dict, want: dict) -> list[str]:
    """What differs between two manifests, one phrase each (the backbone's differences
    named down to a concatenation's member)."""
    out = []
    for k in _IDENTITY_KEYS:
        if k == "backbone":
            out += [f"backbone {d}" for d in BackboneIdentity.from_dict(have.get(k)).differences(
                BackboneIdentity.from_dict(want.get(k)))]
        elif have.get(k) != want.get(k):
            out.append(k)
    return out


def extract_features(dataset: Dataset, backbone: Backbone, out: str | Path, *,
                     batch_size: int = _X.batch_size, num_workers: int | None = _X.workers,
                     shard_size: int | None = _X.shard_size, dtype: str = _X.dtype, overwrite: bool = False,
                     rank: int = 0, world_size: int = 1, progress: bool = True,
                     image_cache: str | Path | None = None, corruption=None,
                     max_pixels: int | None = _X.max_pixels,
                     log_skipped: bool = True, engine: str = _X.engine,
                     device: str = _X.device) -> FeatureSet | None:
    """Compute features for every row of ``dataset`` into the folder ``out``; resumable.

    Parameters
    ----------
    dataset : rows to extract, in order.
    backbone : from :func:`medxfer.backbones.create_backbone`.
    out : features folder. If it already holds features made the same way, complete shards
        are kept (resume). If it holds features made differently, FeatureCacheError is
        raised unless ``overwrite`` is set: stale features are never reused.
    rank, world_size : this process writes shards ``i % world_size == rank`` only; rank 0's
        call returns None unless every shard is complete.
    image_cache : folder for decoded-and-resized images, shared by every backbone and run at
        the same input size, so a second backbone does not decode the PNGs again.
    corruption : a :class:`medxfer.corruptions.Corruption` applied to every image after the
        resize (the disturbance study); recorded in the manifest.
    max_pixels : larger images are skipped and recorded like unreadable ones, from their
        header, before decoding.
    log_skipped : warn about unreadable images, naming the folder that lists them (off when
        the caller reports them itself and ``out`` is temporary, as in predict).
    engine : a registered engine ("torch", "onnxruntime": medxfer.engine) or "auto"
        (see :func:`choose_engine`). The engine used is recorded in the manifest, not part of
        its identity: both give the same features up to float rounding (a test bounds the
        difference), so a cache made by one is reused by the other.
    device : where the torch engine runs: "auto" (the GPU when torch sees one; under torchrun
        cuda:LOCAL_RANK), "cpu", "cuda" or "cuda:N".

    Returns
    -------
    FeatureSet of the rows that decoded, or None when other ranks' shards are still missing.
    """
    if dtype not in STORAGE_TYPES:
        raise FeatureCacheError(f"dtype must be one of {sorted(STORAGE_TYPES)}, got '{dtype}'")
    if len(dataset) == 0:
        raise FeatureCacheError("the dataset has no rows to extract")
    if shard_size is None:
        shard_size = auto_shard_size(len(dataset))
    out = Path(out)
    asked = engine
    engine, dev = choose_engine(engine, device, world_size=world_size)  # before the disk is touched
    want = expected_manifest(dataset, backbone, dtype=dtype, shard_size=shard_size,
                             corruption=corruption)
    partial = out / PARTIAL
    if (out / "manifest.json").is_file() or partial.is_file():
        have = read_manifest(out) if (out / "manifest.json").is_file() else _read_json(partial)
        diff = manifest_mismatch(have, want)
        if diff and not overwrite:
            raise FeatureCacheError(
                f"features folder '{out}' was made differently ({', '.join(diff)} differ); "
                "its features would be stale. Pass --overwrite to recompute or choose another --out.")
        if diff:
            shutil.rmtree(out / "shards", ignore_errors=True)
            (out / "manifest.json").unlink(missing_ok=True)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    mine = [i for i in range(_n_shards(n, shard_size)) if i % world_size == rank]
    todo = [i for i in mine if _valid_shard(out, i) is None]
    if todo and len(todo) < len(mine):
        log.info("resuming in %s: %d of %d shards are already computed and kept; computing the "
                 "other %d", out, len(mine) - len(todo), len(mine), len(todo))
    # the engine is prepared (e.g. the ONNX export) before any image is decoded
    used, make_forward = prepare(backbone, engine, dev, asked=asked) if todo else (engine, None)
    # Which engine and device computed the features is recorded per shard (a resumed run
    # or another rank may use others) and collected into the manifest at the end.
    manifest = want | {"medxfer_version": __version__, "torch_version": torch.__version__,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if rank == 0:
        # What is being made goes to manifest.partial.json; manifest.json, the mark of a
        # complete cache, is written last, atomically, once every shard is in place: a
        # run killed at any moment never leaves a folder that passes for a cache.
        _atomic_write(partial, lambda f: f.write(json.dumps(manifest, indent=2).encode()))
        _atomic_write(out / "rows.csv", lambda f: f.write(dataset.table.to_csv(index=False).encode()))
        _atomic_write(out / "labels.npy", lambda f: np.save(f, dataset.labels))
        if dataset.uncertain_mask is not None:
            _atomic_write(out / "uncertain.npy", lambda f: np.save(f, dataset.uncertain_mask))
        write_problems(out / "problems.csv.gz", dataset.problems)
        if dataset.boxes is not None:
            dataset.boxes.to_csv(out / "boxes.csv", index=False)

    if todo:
        _run_shards(dataset, backbone, out, todo, shard_size=shard_size, batch_size=batch_size,
                    num_workers=num_workers, dtype=STORAGE_TYPES[dtype], progress=progress,
                    image_cache=image_cache, corruption=corruption, max_pixels=max_pixels,
                    engine=used, make_forward=make_forward, device=dev)
    infos = []
    for i in range(_n_shards(n, shard_size)):
        infos.append(_valid_shard(out, i))
        if infos[-1] is None:
            return None  # other ranks' shards still missing
    if not (out / "manifest.json").is_file():
        manifest |= _made_by(infos)
        # Whichever rank sees every shard in place writes the manifest (rank 0 wrote the rows
        # and labels before its first shard, so they are there).
        _atomic_write(out / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=2).encode()))
        partial.unlink(missing_ok=True)
    fs = FeatureSet.load(out)
    if fs.skipped:  # the reading problems and the undecodable images in one file to open
        tmp = out / f"problems.{os.getpid()}.csv.gz"
        write_problems(tmp, _read_problems(out) + list(fs.skipped))
        os.replace(tmp, out / "problems.csv.gz")
    if fs.skipped and log_skipped:
        log.warning("%d image(s) could not be read and were left out (listed in %s): %s",
                    len(fs.skipped), out / "problems.csv.gz", "; ".join(p.detail for p in fs.skipped[:3]))
    return fs


def extract_with_settings(dataset: Dataset, settings: ExtractSettings, out: str | Path, *,
                          overwrite: bool = False, progress: bool = True, rank: int = 0,
                          world_size: int = 1) -> FeatureSet | None:
    """:func:`extract_features` with the backbone and options of ``settings``."""
    from .backbones import create_backbone

    s = settings
    bb = create_backbone(s.backbone, weights=s.weights, input_size=s.input_size, pooling=s.pooling)
    return extract_features(dataset, bb, out, batch_size=s.batch_size, num_workers=s.workers,
                            shard_size=s.shard_size, dtype=s.dtype, overwrite=overwrite,
                            progress=progress, image_cache=s.image_cache, max_pixels=s.max_pixels,
                            engine=s.engine, device=s.device, rank=rank, world_size=world_size)


def auto_shard_size(n: int) -> int:
    """Rows per shard when none is given: about 16 shards, 32 to 1024 rows each, so an
    interrupted run on a few hundred images still keeps most of its work."""
    return int(min(1024, max(32, -(-n // 16))))


def _made_by(infos: list[dict]) -> dict:
    """{"engine", "device"} of the shards' records, each a single value or several joined by
    '+' (e.g. a run resumed with another engine); "unrecorded" for shards of older versions."""
    seen: dict[str, set] = {"engine": set(), "device": set()}
    for info in infos:
        for k in seen:
            seen[k].add(str(info.get(k, "unrecorded")))
    return {k: "+".join(sorted(v)) for k, v in seen.items()}


def _run_shards(dataset: Dataset, backbone: Backbone, out: Path, todo: list[int], *,
                shard_size: int, batch_size: int, num_workers: int | None, dtype, progress: bool,
                image_cache=None, corruption=None, max_pixels=_X.max_pixels,
                engine: str = "torch", make_forward=None, device=torch.device("cpu")):
    n = len(dataset)
    rows = [r for i in todo for r in range(i * shard_size, min(n, (i + 1) * shard_size))]
    paths = dataset.table["path"].astype(str).tolist()
    images = ImageRows(paths, backbone.preprocessing, image_cache, corruption, max_pixels)
    cores = node_cores()
    if num_workers is None:
        num_workers = decode_workers(device, decode_bound=get_engine(engine).decode_bound)
    # Batches never span shards, so every shard is computed in the same batches whichever
    # process (rank) and run computes it: the cache is bit for bit the same.
    batches = [list(range(b, min(b + batch_size, stop)))
               for i in todo for start, stop in [(i * shard_size, min(n, (i + 1) * shard_size))]
               for b in range(start, stop, batch_size)]
    loader = DataLoader(images, batch_sampler=batches, collate_fn=_collate, num_workers=num_workers,
                        persistent_workers=False, pin_memory=device.type == "cuda")
    made = {"engine": engine, "device": "cpu" if get_engine(engine).cpu_only else str(device)}
    home = next(backbone.parameters(), torch.empty(0)).device
    # A decode-bound engine (onnxruntime) gets every core: its idle threads sleep
    # (medxfer.engine), so while decoding is the wall they wait for batches, and when the
    # decoded-image cache makes decoding cheap (the disturbance study's re-extractions) the
    # forward pass is the wall and uses them all (35 against 73 ms an image here on 2 cores).
    forward = make_forward(cores if get_engine(engine).decode_bound else max(1, cores - num_workers))
    try:
        _write_rows(loader, forward, out, paths, n, shard_size, dtype,
                    tqdm(total=len(rows), unit="img", desc=f"extract {backbone.config.name}",
                         disable=not progress, dynamic_ncols=True), made)
    finally:
        if not get_engine(engine).cpu_only and device != home:
            backbone.to(home)  # the caller's backbone stays where it was


def _write_rows(loader, forward, out: Path, paths, n: int, shard_size: int, dtype, bar,
                made: dict) -> None:
    buffers: dict[int, dict] = {}
    with torch.inference_mode():
        for idx, x, errs, hashes in loader:
            feats = forward(x)
            for r, f, e, hsh in zip(idx.tolist(), feats, errs, hashes):
                s = r // shard_size
                buf = buffers.setdefault(s, {"rows": {}, "errors": [], "pixels": {}})
                buf["rows"][r] = f
                buf["pixels"][r] = hsh
                if e:
                    buf["errors"].append({"row": r, "path": paths[r], "reason": e})
                stop = min(n, (s + 1) * shard_size)
                if len(buf["rows"]) == stop - s * shard_size:
                    _write_shard(out, s, buffers.pop(s), s * shard_size, stop, dtype, made)
            bar.update(len(idx))
    bar.close()


def _write_shard(out: Path, i: int, buf: dict, start: int, stop: int, dtype, made: dict) -> None:
    arr = np.stack([buf["rows"][r] for r in range(start, stop)]).astype(dtype)
    for e in buf["errors"]:
        arr[e["row"] - start] = np.nan
    npy = _shard_path(out, i)
    _atomic_write(npy, lambda f: np.save(f, arr))
    info = {"shard": i, "rows": [start, stop], "sha256": sha256_file(npy), "errors": buf["errors"],
            "pixel_hashes": [buf["pixels"][r] for r in range(start, stop)]} | made
    _atomic_write(npy.with_suffix(".json"), lambda f: f.write(json.dumps(info).encode()))
