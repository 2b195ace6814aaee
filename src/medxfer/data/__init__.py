"""Datasets: one contract for every source.

A :class:`Dataset` is a table with one row per image (columns ``image_id``, ``path``,
``patient_id`` plus metadata such as ``age``, ``sex``, ``view``, ``follow_up``), a float
``labels`` array aligned row by row holding 1, 0 or NaN (unknown) per finding, and the
finding names. Methods that select rows return new datasets; nothing mutates in place.

Modules: ``contract`` (Dataset, Problem, finding names), ``parsing`` (label, age and
repeated-row parsing shared by the readers), ``chestxray14`` (the NIH release),
``tables`` (a generic CSV), ``folders`` (class folders, DICOM folders, loose images) and
``registry`` (:func:`read_dataset` and :func:`detect_format`: each reader module registers
its format, so a new format is one new module). Patient-wise splits, the
official ChestX-ray14 split and splits from a file live in :mod:`medxfer.splits`.
"""

from .chestxray14 import (CHESTXRAY14_TABLE_NAMES, find_chestxray14_table, read_chestxray14,
                          read_chestxray14_boxes, read_chestxray14_table)
from .contract import CHESTXRAY14_FINDINGS, NO_FINDING, Dataset, Problem
from .folders import index_images, read_class_folder, read_dicom_folder, read_image_paths
from .parsing import drop_duplicate_rows, parse_age, parse_finding_labels, parse_label_cell
from .registry import (Reader, detect_format, get_reader, read_dataset, readers, register_reader,
                       unregister_reader)
from .sample import bundled_sample
from .tables import PATH_COLUMNS, PATIENT_COLUMNS, read_csv_dataset

__all__ = [
    "CHESTXRAY14_FINDINGS", "CHESTXRAY14_TABLE_NAMES", "NO_FINDING", "PATH_COLUMNS",
    "PATIENT_COLUMNS", "Dataset", "Problem", "Reader", "bundled_sample", "detect_format",
    "drop_duplicate_rows", "find_chestxray14_table", "get_reader", "index_images", "parse_age",
    "parse_finding_labels", "parse_label_cell", "read_chestxray14", "read_chestxray14_boxes",
    "read_chestxray14_table", "read_class_folder", "read_csv_dataset", "read_dataset",
    "read_dicom_folder", "read_image_paths", "readers", "register_reader", "unregister_reader",
]
