"""medxfer: transfer learning for medical images, chest radiographs first."""

__version__ = "0.1.0"
