"""Datasets: one contract for every source.

A :class:`Dataset` is a table with one row per image (columns ``image_id``, ``path``,
``patient_id`` plus metadata such as ``age``, ``sex``, ``view``, ``follow_up``), a float
``labels`` array aligned row by row holding 1, 0 or NaN (unknown) per finding, and the
finding names. Methods that select rows return new datasets; nothing mutates in place.

Modules: ``contract`` (Dataset, Problem, finding names), ``parsing`` (label, age and
repeated-row parsing shared by the readers), ``chestxray14`` (the NIH release),
``tables`` (a generic CSV), ``folders`` (class folders, DICOM folders, loose images), the
public sets as released (``chexpert``, ``mimic``, ``padchest``, ``vindr``, ``rsna``,
``shenzhen``, ``montgomery``, ``jsrt``, sharing ``public``), ``vocabulary`` (their finding
names mapped onto ChestX-ray14's, tables in ``vocabularies/``) and ``registry`` (:func:`read_dataset` and :func:`detect_format`: each reader module registers
its format, so a new format is one new module). Patient-wise splits, the
official ChestX-ray14 split and splits from a file live in :mod:`medxfer.splits`.
"""

from .chestxray14 import (CHESTXRAY14_TABLE_NAMES, find_chestxray14_table, read_chestxray14,
                          read_chestxray14_boxes, read_chestxray14_table)
from .chexpert import CHEXPERT_OBSERVATIONS, chexpert_labels, read_chexpert
from .contract import (CHESTXRAY14_FINDINGS, NO_FINDING, PARTIAL_COPY, PATIENT_ID_SOURCES, UNCERTAIN_POLICIES,
                       Dataset, Problem)
from .folders import index_images, read_class_folder, read_dicom_folder, read_image_paths
from .jsrt import read_jsrt
from .mimic import read_mimic_cxr
from .montgomery import read_montgomery
from .padchest import read_padchest
from .parsing import (drop_duplicate_rows, normalise_patient_ids, parse_age, parse_finding_labels,
                      parse_label_cell)
from .public import normalise_view
from .registry import (Reader, detect_format, get_reader, read_dataset, readers, register_reader,
                       unregister_reader)
from .rsna import read_rsna_pneumonia
from .sample import bundled_sample
from .shenzhen import read_shenzhen
from .tables import PATH_COLUMNS, PATIENT_COLUMNS, read_csv_dataset
from .vindr import VINDR_KAGGLE_FINDINGS, VINDR_RULES, read_vindr_cxr
from .vocabulary import (VOCABULARIES, common_vocabulary, harmonise, harmonised_label_index,
                         shared_findings, vocabulary_table)

__all__ = [
    "PARTIAL_COPY",
    "CHESTXRAY14_FINDINGS", "CHESTXRAY14_TABLE_NAMES", "CHEXPERT_OBSERVATIONS", "NO_FINDING",
    "PATH_COLUMNS", "PATIENT_COLUMNS", "PATIENT_ID_SOURCES", "UNCERTAIN_POLICIES",
    "VINDR_KAGGLE_FINDINGS", "VINDR_RULES", "VOCABULARIES", "Dataset", "Problem", "Reader",
    "bundled_sample", "chexpert_labels", "common_vocabulary", "detect_format",
    "drop_duplicate_rows", "find_chestxray14_table", "get_reader", "harmonise", "index_images",
    "normalise_patient_ids", "normalise_view", "parse_age", "parse_finding_labels",
    "parse_label_cell", "read_chestxray14", "read_chestxray14_boxes", "read_chestxray14_table",
    "read_chexpert", "read_class_folder", "read_csv_dataset", "read_dataset", "read_dicom_folder",
    "read_image_paths", "read_jsrt", "read_mimic_cxr", "read_montgomery", "read_padchest",
    "read_rsna_pneumonia", "read_shenzhen", "read_vindr_cxr", "readers", "register_reader",
    "unregister_reader", "vocabulary_table", "harmonised_label_index", "shared_findings",
]
