"""medxfer: transfer learning for medical images, chest radiographs first."""

__version__ = "0.1.0"

from .cores import passive_defaults as _passive_defaults

_passive_defaults()  # before torch loads OpenMP: idle threads sleep instead of spinning
