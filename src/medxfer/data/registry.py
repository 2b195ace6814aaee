"""The dataset readers, each registered by its own module with :func:`register_reader`, and
what every command asks of a path: which format it is (:func:`detect_format`) and its rows
(:func:`read_dataset`). Adding a format is one new module in this package: pkgutil finds it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import DataError, unknown_name_message
from .contract import Dataset

_READERS: dict[str, Reader] = {}


@dataclass(frozen=True)
class Reader:
    """One dataset format.

    detect(path) -> the reason the path is in this format (shown by `medxfer inspect`), or
    None. read(path, **options) -> Dataset. options: the keyword options read accepts; any
    other is refused rather than dropped. priority: higher is asked first, for layouts that
    two formats would both claim (a ChestX-ray14 folder that also holds DICOM files).
    """

    name: str
    description: str
    detect: Callable[[Path], str | None]
    read: Callable[..., Dataset]
    options: tuple[str, ...]
    priority: int


def register_reader(name: str, *, description: str, read: Callable[..., Dataset], priority: int,
                    options: tuple[str, ...] | None = None):
    """Decorator of a format's detect function. ``options`` defaults to the keyword-only
    parameters of ``read``, so the two cannot drift apart."""
    if options is None:
        options = tuple(p.name for p in inspect.signature(read).parameters.values()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def register(detect):
        old = _READERS.get(name)
        if old is not None and old.detect.__module__ != detect.__module__:
            raise DataError(f"dataset format '{name}' is registered twice: by {old.detect.__module__} "
                            f"and by {detect.__module__}; give one of them another name")
        _READERS[name] = Reader(name, description, detect, read, tuple(options), priority)
        return detect
    return register


def unregister_reader(name: str) -> None:
    """Forget a reader registered at run time (a test's, a plug-in's)."""
    _READERS.pop(name, None)


def load_readers() -> None:
    """Import every module of this package, so each reader registers itself."""
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__package__}.{m.name}")


def readers() -> list[Reader]:
    """Every registered reader, in the order they are asked."""
    load_readers()
    return sorted(_READERS.values(), key=lambda r: (-r.priority, r.name))


def get_reader(name: str) -> Reader:
    load_readers()
    if name not in _READERS:
        raise DataError(unknown_name_message("dataset format", name, _READERS))
    return _READERS[name]


def _recognise(path: Path) -> tuple[Reader, str]:
    if not path.exists():
        raise DataError(f"dataset folder '{path}' does not exist")
    found = readers()
    for reader in found:
        reason = reader.detect(path)
        if reason is not None:
            return reader, reason
    raise DataError(f"'{path}' is not a dataset medxfer recognises. It reads: "
                    + "; ".join(f"{r.name}: {r.description}" for r in found))


def detect_format(path: str | Path) -> tuple[str, str]:
    """(reader name, why) for the first reader, by priority, that recognises ``path``."""
    reader, reason = _recognise(Path(path))
    return reader.name, reason


def read_dataset(path: str | Path, **options) -> Dataset:
    """Open a dataset by its layout, with ``options`` for its reader (e.g. path_column= for a
    CSV). An option the format does not take is an error, not silently ignored."""
    path = Path(path)
    reader, reason = _recognise(path)
    refused = [k for k in options if k not in reader.options]
    if refused:
        takes = ", ".join(reader.options) or "none"
        raise DataError(f"option {', '.join(map(repr, refused))} does not apply to the {reader.name} "
                        f"format of '{path}' ({reason}); its options: {takes}")
    return replace(reader.read(path, **options), format=reader.name, format_reason=reason)
