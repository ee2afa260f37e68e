"""The workspace convention: default paths every command uses, relative to the current directory.

A workspace holds ``data/labels.csv``, ``data/images/``, ``runs/`` (trained models) and
``submissions/``; every default below can be overridden by a command-line flag.
"""

from pathlib import Path

DATA_DIR = Path("data")
LABELS_CSV = DATA_DIR / "labels.csv"
IMAGES_DIR = DATA_DIR / "images"
RUNS_DIR = Path("runs")
SUBMISSIONS_DIR = Path("submissions")
