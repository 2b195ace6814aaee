"""The layout of medxfer.data: one public surface, modules that share only public names."""

import ast
import subprocess
import sys
from pathlib import Path

import medxfer.data

PACKAGE = Path(medxfer.data.__file__).parent

#: Every public name medxfer.data offered when it was one module (splits moved to medxfer.splits).
PUBLIC = ["CHESTXRAY14_FINDINGS", "Dataset", "NO_FINDING", "PATH_COLUMNS", "PATIENT_COLUMNS",
          "Problem", "find_chestxray14_table", "index_images", "parse_finding_labels",
          "parse_label_cell", "read_chestxray14", "read_chestxray14_boxes",
          "read_chestxray14_table", "read_class_folder", "read_csv_dataset", "read_dataset",
          "read_dicom_folder", "read_image_paths"]


def test_every_public_name_is_still_importable_from_medxfer_data():
    missing = [n for n in PUBLIC if not hasattr(medxfer.data, n)]
    assert not missing
    assert set(PUBLIC) <= set(medxfer.data.__all__)
    assert all(hasattr(medxfer.data, n) for n in medxfer.data.__all__)


def test_modules_import_no_private_names_from_each_other():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not offenders


def test_splits_live_in_splits_and_data_does_not_import_them():
    from medxfer.splits import official_split, split_from_file  # noqa: F401

    assert not hasattr(medxfer.data, "official_split")
    code = "import sys, medxfer.data; print('medxfer.splits' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
