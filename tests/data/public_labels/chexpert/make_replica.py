"""Writes train.csv: a CheXpert-format replica with invented rows (the release's header and
path layout; patients, studies, sex, age and labels drawn from a seeded generator). The
CheXpert Research Use Agreement does not permit redistributing the real table, so no real
row is committed. Run from this folder: python make_replica.py"""

import csv

import numpy as np

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
          "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
          "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
          "Pleural Other", "Fracture", "Support Devices"]
rng = np.random.default_rng(20261201)
rows = []
# the first row as the reader's No Finding rule needs it: No Finding 1, Pneumothorax 0,
# Support Devices 1, every other finding blank
first = {"No Finding": "1.0", "Pneumothorax": "0.0", "Support Devices": "1.0"}
rows.append(["CheXpert-v1.0-small/train/patient90001/study1/view1_frontal.jpg", "Female", "68",
             "Frontal", "AP"] + [first.get(h, "") for h in HEADER[5:]])
patient, study = 90002, 1
while len(rows) < 30:
    sex, age = rng.choice(["Female", "Male"]), str(int(rng.integers(20, 90)))
    views = ["frontal"] + (["lateral"] if rng.random() < 0.3 else [])
    for v, view in enumerate(views, 1):
        if len(rows) == 30:
            break
        cells = [rng.choice(["", "1.0", "0.0", "-1.0"], p=[0.6, 0.2, 0.1, 0.1]) for _ in HEADER[6:]]
        rows.append([f"CheXpert-v1.0-small/train/patient{patient}/study{study}/view{v}_{view}.jpg",
                     sex, age, view.capitalize(),
                     "" if view == "lateral" else rng.choice(["AP", "PA"]), ""] + cells)
    if rng.random() < 0.5:
        study += 1  # another study of the same patient
    else:
        patient, study = patient + 1, 1
with open("train.csv", "w", newline="") as f:
    csv.writer(f).writerows([HEADER] + rows)
