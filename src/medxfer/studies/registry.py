"""The studies, each registered by its own module with :func:`register_study`, so adding a
study is one new file in this package: the command line, ``run_study`` and the index page
all read this registry.

This module imports nothing heavy: the command line builds its choices from
:func:`study_names` without importing the study modules (and torch behind them).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import MedxferError, unknown_name_message

#: Modules of this package that are not studies.
NOT_STUDIES = ("common", "page", "registry")
#: The command line's (and ``run_study``'s) name for every study in order.
ALL = "all"

_STUDIES: dict[str, Study] = {}


@dataclass(frozen=True)
class Study:
    """One study: its name on the command line, its heading on the index page, its place in
    `all` and on the page, and ``run(ctx) -> result dict``."""

    name: str
    title: str
    order: int
    run: Callable


def register_study(name: str, *, title: str, order: int):
    """Decorator of a study's ``run_*`` function. Give ``name`` and ``order`` as literals:
    :func:`study_names` reads them from the source without importing it."""
    def register(run):
        old = _STUDIES.get(name)
        if old is not None and (old.run.__module__, old.run.__qualname__) != (run.__module__, run.__qualname__):
            raise MedxferError(f"study '{name}' is registered twice: by {old.run.__module__} and "
                               f"by {run.__module__}; give one of them another name")
        _STUDIES[name] = Study(name, title, order, run)
        return run
    return register


def unregister_study(name: str) -> None:
    """Forget a study registered at run time (a test's, a plug-in's)."""
    _STUDIES.pop(name, None)


def study_modules() -> list[str]:
    """Names of the study modules in this package (every module but NOT_STUDIES and
    private ones), found by pkgutil without importing them."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if m.name not in NOT_STUDIES and not m.name.startswith("_"))


def _declared(module: str) -> tuple[int, str]:
    """(order, name) of the register_study call in a study module's source."""
    path = Path(__file__).with_name(f"{module}.py")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_study":
            try:
                order = next(ast.literal_eval(k.value) for k in node.keywords if k.arg == "order")
                return order, ast.literal_eval(node.args[0])
            except (StopIteration, IndexError, ValueError) as exc:
                raise MedxferError(f"{path}: register_study needs a literal name and order= "
                                   "(the command line reads them without importing)") from exc
    raise MedxferError(f"{path} is in medxfer.studies but registers no study; decorate its "
                       "run function with @register_study(name, title=..., order=...)")


def study_names() -> list[str]:
    """The study names in order, read from the study modules without importing them (for the
    command line's choices); the same list as ``[s.name for s in all_studies()]``."""
    return [name for _, name in sorted(_declared(m) for m in study_modules())]


def load_studies() -> None:
    """Import every study module, so each registers itself (importing twice is a no-op)."""
    for m in study_modules():
        importlib.import_module(f"{__package__}.{m}")


def all_studies() -> list[Study]:
    """Every registered study, in ``order``."""
    load_studies()
    return sorted(_STUDIES.values(), key=lambda s: (s.order, s.name))


def get_study(name: str) -> Study:
    load_studies()
    if name not in _STUDIES:
        raise MedxferError(unknown_name_message("study", name, [s.name for s in all_studies()]))
    return _STUDIES[name]
