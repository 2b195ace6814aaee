"""Forward-pass engines: a name, whether it is installed, where it runs, and how it turns a
backbone into a forward pass. One file per engine registers itself here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import FeatureCacheError, unknown_name_message


@dataclass(frozen=True)
class Engine:
    """A forward-pass engine.

    ``load(backbone, device)`` does the slow, fallible part once (e.g. an export) and returns
    ``make(threads)``, which returns the forward pass: x (B, 3, S, S) CPU tensor -> (B, d)
    float32 numpy features. ``load`` may raise when the backbone cannot run in this engine
    (medxfer then falls back to torch, unless the engine was asked for by name).
    ``cpu_only``: runs on the CPU whatever device is asked for. ``preferred_on_cpu``: what
    "auto" picks on a CPU when it is installed. ``decode_bound``: its forward pass is cheap
    enough that image decoding gets every core.
    """

    name: str
    description: str
    installed: Callable[[], bool]
    load: Callable
    cpu_only: bool = False
    preferred_on_cpu: bool = False
    decode_bound: bool = False


_ENGINES: dict[str, Engine] = {}


def register_engine(engine: Engine) -> Engine:
    if engine.name in _ENGINES or engine.name == "auto":
        raise FeatureCacheError(f"engine '{engine.name}' is registered twice (or is 'auto')")
    _ENGINES[engine.name] = engine
    return engine


def engine_names() -> list[str]:
    """Registered engines, in registration order ("auto" is not one: it chooses)."""
    return list(_ENGINES)


def get_engine(name: str) -> Engine:
    if name not in _ENGINES:
        raise FeatureCacheError(unknown_name_message("engine", name, ["auto", *_ENGINES]))
    return _ENGINES[name]
