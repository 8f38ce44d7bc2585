"""The example notebooks (examples/*.ipynb) execute top to bottom on petals-mini, as a Kaggle user runs them:
a change that breaks one fails here. Each runs in a fresh kernel in its own folder (its run folder and
submission.csv land there, not in examples/) and takes about a minute on 2 cores (a 64 px, 1-epoch recipe
on the sample data: the notebooks choose it when DATA is petals-mini)."""
from __future__ import annotations

import csv
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "petals-mini")
TEST_IMAGES = 503   # petals-mini's test split


@pytest.mark.slow
@pytest.mark.parametrize("name, run_folder", [("quickstart.ipynb", "run"), ("tpu.ipynb", "run-tpu")])
def test_notebook_runs_and_writes_a_submission(name, run_folder, tmp_path, monkeypatch):
    data = os.environ.get("PETALNET_DATA", DATA)
    if not os.path.isdir(data):
        pytest.skip(f"no petals-mini at {data} (set PETALNET_DATA)")
    monkeypatch.setenv("PETALNET_DATA", os.path.abspath(data))
    # the kernel is a child process: it imports this checkout's petalnet, as the tests do
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(os.path.join(EXAMPLES, name), as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    # what the user is promised: the run folder with its curves, and a submission of every test image
    assert os.path.isfile(tmp_path / run_folder / "curves.png")
    with open(tmp_path / "submission.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == TEST_IMAGES and all(0 <= int(r["label"]) < 104 for r in rows)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the curves were not shown"
    assert any("val_macro_f1" in o.get("data", {}).get("text/html", "") for o in outputs), "no history table"
