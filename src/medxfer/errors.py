"""Typed errors. Every message names the bad value and says how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sklearn.exceptions import NotFittedError as _SklearnNotFitted


class MedxferError(Exception):
    """Base class for every error medxfer raises on purpose."""


class DataError(MedxferError, ValueError):
    """A dataset, table or label could not be read as asked."""


class ImageReadError(DataError):
    """One image file could not be decoded."""

    def __init__(self, path, reason: str, fix: str = ""):
        self.path = str(path)
        self.reason = reason
        msg = f"cannot read image '{path}': {reason}"
        if fix:
            msg += f". {fix}"
        super().__init__(msg)


class BackboneError(MedxferError, ValueError):
    """A backbone name is unknown or its weights cannot be found."""


class FeatureCacheError(MedxferError, ValueError):
    """A features folder does not match what was asked of it."""


class ModelError(MedxferError, ValueError):
    """A model folder is missing, corrupt or does not fit the given features."""


class NotFittedError(MedxferError, _SklearnNotFitted):
    """An estimator was used before `fit` (also an sklearn NotFittedError)."""


def unknown_name_message(kind: str, name: str, available: Iterable[str]) -> str:
    """'Unknown backbone 'x'. Did you mean 'y'? Available: a, b, c.'"""
    available = sorted(available)
    msg = f"Unknown {kind} '{name}'."
    close = difflib.get_close_matches(name, available, n=1)
    if close:
        msg += f" Did you mean '{close[0]}'?"
    return msg + f" Available: {', '.join(available)}."
