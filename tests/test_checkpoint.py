"""Checkpoints load without running code (issue 14, item 1) and a malformed one is one line naming the
file and the field (item 12)."""
import json
import os
import random

import numpy as np
import pytest
import torch

from petalnet import checkpoint
from petalnet.cli import main
from petalnet.errors import PetalnetError
from petalnet.models import create_model
from tests.conftest import PETALS_192, free_port


class Payload:
    """Unpickling this runs ``os.system("touch MARKER")``: what a hostile run folder would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tiny_state(num_classes: int = 12, image_size: int = 32) -> dict:
    """Everything train writes into last.pt, for a random-init resnet10t (no training: fast)."""
    model, source = create_model("resnet10t", num_classes, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return {"model_name": "resnet10t", "num_classes": num_classes, "image_size": image_size,
            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "weights_source": source, "tta": "none",
            "config": {"data": PETALS_192, "out": "x", "model": "resnet10t", "epochs": 2, "batch_size": 4,
                       "image_size": image_size, "num_classes": num_classes, "pretrained": False},
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1, "step": 0,
            "history": [{"epoch": 1, "train_loss": 1.0, "seconds": 1.0, "train_images_per_second": 1.0}],
            "best": {"epoch": 1}, "accumulators": None, "rng": checkpoint.rng_state()}


@pytest.fixture(scope="module")
def state():
    return tiny_state()


def write_run(folder, state) -> str:
    """A run folder as train leaves it, whose best.pt and last.pt hold ``state``."""
    os.makedirs(os.path.join(folder, "checkpoints"), exist_ok=True)
    for name in ("best.pt", "last.pt"):
        torch.save(state, os.path.join(folder, "checkpoints", name))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump({"model": "resnet10t", "data": PETALS_192}, fh)
    with open(os.path.join(folder, "summary.json"), "w") as fh:
        json.dump({"model": "resnet10t", "image_size": 32, "epochs": 1, "best_epoch": 1}, fh)
    with open(os.path.join(folder, "history.jsonl"), "w") as fh:
        fh.write(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n")
    return str(folder)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("petalnet: error: "), err
    assert "Traceback" not in err
    return lines[0]


def commands(run, tmp_path):
    return {
        "predict": ["predict", run, "--data", PETALS_192, "--split", "test", "--output", str(tmp_path / "s.csv")],
        "evaluate": ["evaluate", run, "--data", PETALS_192, "--out", str(tmp_path / "eval")],
        "export": ["export", run, "--output", str(tmp_path / "m.onnx")],
        "serve": ["serve", run, "--port", str(free_port())],
        "report": ["report", run, "--data", PETALS_192, "--output", str(tmp_path / "r.html")],
        "train --resume": ["train", "--resume", run],
    }


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "serve", "report", "train --resume"])
@pytest.mark.parametrize("where", ["field", "model"])
def test_a_pickle_payload_is_refused_and_never_runs(command, where, state, tmp_path, capsys, monkeypatch):
    import uvicorn
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started on a hostile checkpoint"))
    marker = tmp_path / "marker"
    hostile = dict(state)
    if where == "field":   # an extra field nobody reads: only the unpickler would ever touch it
        hostile["note"] = Payload(marker)
    else:                  # inside the state dict, beside the tensors
        hostile["model"] = {**state["model"], "evil": Payload(marker)}
    run = write_run(tmp_path / "run", hostile)
    code = main(commands(run, tmp_path)[command])
    line = one_error_line(capsys)
    assert code == 1
    assert "refused" in line and "checkpoint" in line and os.path.join(run, "checkpoints") in line
    assert not marker.exists(), "the payload ran"


def test_checkpoints_written_now_need_no_allowlist(state, tmp_path):
    path = str(tmp_path / "last.pt")
    checkpoint.save(state, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    torch.load(path, weights_only=True)   # plain torch, no safe_globals


def test_rng_state_round_trip_restores_every_generator():
    saved = checkpoint.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(saved)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_old_run_folders_with_numpy_rng_still_resume(state, tmp_path):
    """last.pt written by the previous release: numpy's state as an ndarray inside ``rng``."""
    old = dict(state, rng={"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                           "python": random.getstate()})
    expected = np.random.rand(4)   # what the saved numpy state draws next
    path = str(tmp_path / "last.pt")
    torch.save(old, path)
    loaded = checkpoint.load_resume(path)
    checkpoint.set_rng_state(loaded["rng"])
    assert np.array_equal(np.random.rand(4), expected)


def test_an_object_array_is_refused_even_with_the_numpy_allowlist(tmp_path):
    marker = tmp_path / "marker"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Payload(marker), 1
    path = str(tmp_path / "x.pt")
    torch.save({"rng": {"numpy": ("MT19937", arr)}}, path)
    with pytest.raises(PetalnetError, match="refused"):
        checkpoint.load(path)
    assert not marker.exists()


def _malformed(state):
    sd = state["model"]
    fc = next(k for k in sd if k.endswith("fc.weight"))
    return {
        "tensor instead of a dict": (torch.zeros(3), "not a petalnet checkpoint"),
        "model is a tensor": (dict(state, model=torch.zeros(3)), "'model' must be a dict of tensors"),
        "wrong shapes": (dict(state, model={**sd, fc: torch.zeros(12, 7)}), "do not fit resnet10t"),
        "num_classes mismatch": (dict(state, num_classes=5), "do not fit resnet10t with 5 classes"),
        "image_size 0": (dict(state, image_size=0), "'image_size' must be an integer >= 1, not 0"),
        "string mean": (dict(state, mean="0.5"), "'mean' must be 3 finite numbers"),
        "nan std": (dict(state, std=(0.2, float("nan"), 0.2)), "'std' must be 3 finite numbers"),
        "no model_name": ({k: v for k, v in state.items() if k != "model_name"}, "no 'model_name'"),
        "unknown tta": (dict(state, tta="sideways"), "'tta' must be one of none, flip, full"),
    }


@pytest.mark.parametrize("case", ["tensor instead of a dict", "model is a tensor", "wrong shapes",
                                  "num_classes mismatch", "image_size 0", "string mean", "nan std",
                                  "no model_name", "unknown tta"])
def test_malformed_checkpoint_is_one_line_naming_file_and_field(case, state, tmp_path, capsys):
    bad, words = _malformed(state)[case]
    path = str(tmp_path / "bad.pt")
    torch.save(bad, path)
    assert main(["export", path, "--output", str(tmp_path / "m.onnx")]) == 1
    line = one_error_line(capsys)
    assert path in line and words in line, line
    assert not os.path.exists(tmp_path / "m.onnx")


@pytest.mark.parametrize("field,value,words", [
    ("epoch", -1, "'epoch' must be an integer >= 0"),
    ("step", 1.5, "'step' must be an integer >= 0"),
    ("history", {"epoch": 1}, "'history' must be a list of dicts"),
    ("optimizer", torch.zeros(1), "'optimizer' must be an optimizer state dict"),
    ("config", [], "'config' must be a dict"),
    ("rng", {"torch": torch.zeros(3, dtype=torch.uint8), "numpy": 1, "python": 2}, "'rng' holds a state"),
    ("budget", {"planned_epochs": 3, "epochs": 3, "lr_knots": [[1, "x"]]}, "'budget' must be a dict of planned_epochs"),
    ("budget", {"planned_epochs": 3, "epochs": 3, "lr_end": float("nan")}, "'budget' must be a dict of planned_epochs"),
    ("budget", {"planned_epochs": 3, "epochs": 3, "last_steps": 0}, "'budget' must be a dict of planned_epochs"),
])
def test_malformed_resume_state_is_one_line(field, value, words, state, tmp_path, capsys):
    run = write_run(tmp_path / "run", dict(state, **{field: value}))
    assert main(["train", "--resume", run]) == 1
    line = one_error_line(capsys)
    assert os.path.join(run, "checkpoints", "last.pt") in line and words in line, line
