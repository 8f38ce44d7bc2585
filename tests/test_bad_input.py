"""No traceback for bad input (issue 14): the CLI on a table of hostile or careless inputs exits 1 (bad
data or file) or 2 (bad option), says one line naming what is wrong, and leaves nothing behind."""
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import petalnet
from petalnet.cli import main
from petalnet.config import TrainConfig
from petalnet.errors import OptionError
from tests.conftest import PETALS_192, ROOT, free_port
from tests.test_checkpoint import Payload, tiny_state, write_run

# Runs each case as `python -m petalnet ARGS` would, in a forked child of one interpreter that imported
# torch and petalnet once (a fresh interpreter per case spends ~6-16 s importing torch on this machine's
# 2 shared cores). The child gets its own stdout/stderr files, and an exception that escaped main is
# printed as the interpreter prints it: a traceback.
DRIVER = r"""
import json, os, runpy, signal, sys, traceback
import torch, petalnet.cli, petalnet.engine, petalnet.predict, petalnet.serve.app
cases, out = json.load(open(sys.argv[1])), sys.argv[2]
codes = []
for i, argv in enumerate(cases):
    pid = os.fork()
    if pid == 0:
        signal.alarm(120)   # a case that hangs (a server that started) is killed, not waited for
        for fd, name in ((1, "out"), (2, "err")):
            f = os.open(os.path.join(out, f"{i}.{name}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
        sys.argv = ["petalnet", *argv]
        try:
            runpy.run_module("petalnet", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    codes.append(os.waitstatus_to_exitcode(status))
json.dump(codes, open(os.path.join(out, "codes.json"), "w"))
"""


def run_cli_table(cases: list[list[str]], tmp_path) -> list[tuple[int, str]]:
    """(exit code, stderr) of ``petalnet ARGS`` for each case."""
    out = tmp_path / "cli-out"
    out.mkdir()
    (out / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(out / "cases.json"), str(out)], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    codes = json.loads((out / "codes.json").read_text())
    return [(code, (out / f"{i}.err").read_text()) for i, code in enumerate(codes)]


def error_lines(err: str) -> list[str]:
    """stderr without Lightning's info lines (there should be none before an error, but they are not ours)."""
    return [line for line in err.strip().splitlines() if line and not line.startswith(("INFO:", "Using "))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders: a hostile one, malformed ones, and a sound one (to check options on)."""
    base = tmp_path_factory.mktemp("runs")
    state = tiny_state()
    fc = next(k for k in state["model"] if k.endswith("fc.weight"))
    marker = base / "marker"
    folders = {
        "payload": dict(state, note=Payload(marker)),
        "wrong-shapes": dict(state, model={**state["model"], fc: torch.zeros(12, 7)}),
        "num-classes": dict(state, num_classes=5),
        "image-size-0": dict(state, image_size=0),
        "string-mean": dict(state, mean="0.5"),
        "epoch-negative": dict(state, epoch=-1),
        "good": state,
    }
    paths = {name: write_run(base / name, s) for name, s in folders.items()}
    torch.save(torch.zeros(3), base / "tensor.pt")
    (base / "truncated.pt").write_bytes((base / "good" / "checkpoints" / "best.pt").read_bytes()[:5000])
    return paths | {"tensor": str(base / "tensor.pt"), "truncated": str(base / "truncated.pt"), "marker": marker,
                    "base": base}


def test_cli_table_of_bad_inputs(runs, tmp_path):
    out, good, test = str(tmp_path / "run"), runs["good"], os.path.join(PETALS_192, "test")
    photo = os.path.join(ROOT, "petalnet", "serve", "page.html")   # any file: these fail before reading it
    train = ["train", "--data", PETALS_192, "--out", out, "--model", "resnet10t", "--no-pretrained"]
    conv = ["convert", PETALS_192, str(tmp_path / "conv")]
    table = [  # (argv, exit code, words in the line)
        # item 1 and 12: checkpoints
        (["predict", runs["payload"], "--data", test], 1, "refused"),
        (["train", "--resume", runs["payload"]], 1, "refused"),
        (["predict", runs["tensor"], photo], 1, "not a petalnet checkpoint"),
        (["predict", runs["truncated"], photo], 1, "not a readable checkpoint"),
        (["evaluate", runs["wrong-shapes"], "--data", PETALS_192], 1, "do not fit resnet10t"),
        (["export", runs["num-classes"], "--output", str(tmp_path / "m.onnx")], 1, "do not fit resnet10t with 5"),
        (["serve", runs["image-size-0"], "--port", str(free_port())], 1, "'image_size' must be"),
        (["predict", runs["string-mean"], photo], 1, "'mean' must be 3 finite numbers"),
        (["train", "--resume", runs["epoch-negative"]], 1, "'epoch' must be an integer >= 0"),
        (["report", runs["payload"], "--data", PETALS_192, "--output", str(tmp_path / "r.html")], 1, "refused"),
        # item 11: train options (no run folder may be left: checked below)
        (train + ["--batch-size", "0"], 2, "--batch-size 0: must be at least 1"),
        (train + ["--batch-size", "-1"], 2, "--batch-size -1"),
        (train + ["--epochs", "0"], 2, "--epochs 0: must be at least 1"),
        (train + ["--epochs", "-1"], 2, "--epochs -1"),
        (train + ["--image-size", "-5"], 2, "--image-size -5"),
        (train + ["--image-size", "0"], 2, "--image-size 0"),
        (train + ["--image-size", "100000"], 2, "--image-size 100000: must be at most"),
        (train + ["--label-smoothing", "2"], 2, "--label-smoothing 2.0: must be less than 1"),
        (train + ["--workers", "-1"], 2, "--workers -1"),
        (train + ["--seed", "-1"], 2, "--seed -1"),
        (train + ["--lr", "-1"], 2, "--lr -1.0: must be greater than 0"),
        (train + ["--lr", "nan"], 2, "--lr nan: must be a finite number"),
        (train + ["--head-lr-scale", "0"], 2, "--head-lr-scale 0.0"),
        (train + ["--weight-decay", "-0.1"], 2, "--weight-decay -0.1"),
        (train + ["--devices", "0"], 2, "--devices 0"),
        (train + ["--budget", "soon"], 2, "--budget soon: not a duration"),
        (train + ["--budget", "0s"], 2, "--budget 0s: must be more than 0 seconds"),
        # other commands' options
        (["predict", good, "--data", test, "--batch-size", "0"], 2, "--batch-size 0"),
        (["evaluate", good, "--data", PETALS_192, "--batch-size", "-1"], 2, "--batch-size -1"),
        (["predict", good, photo, "--top-k", "-1"], 2, "--top-k -1"),
        (["predict", good, "--data", test, "--tta-margin", "-0.5"], 2, "--tta-margin -0.5: must be at least 0"),
        (["evaluate", good, "--data", PETALS_192, "--tta-margin", "nan"], 2, "--tta-margin nan: must be a finite"),
        (["predict", good, "--data", test, "--ensemble", good, "--ensemble-weights", "nan", "1"], 2,
         "--ensemble-weights nan 1"),
        (["predict", good, "--data", test, "--ensemble", good, "--ensemble-weights", "0", "0"], 2, "not all zero"),
        (["predict", good, "--data", test, "--ensemble", good, "--ensemble-weights", "-1", "2"], 2, "non-negative"),
        (["predict", good, "--data", test, "--ensemble", good, "--ensemble-weights", "inf", "1"], 2, "finite"),
        (conv + ["--size", "64", "--shard-size", "0"], 2, "--shard-size 0"),
        (conv + ["--size", "64", "--shard-size", "-1"], 2, "--shard-size -1"),
        (conv + ["--size", "100000"], 2, "--size 100000: must be at most 4096"),
        (["serve", good, "--port", "99999"], 2, "--port 99999: must be at most 65535"),
        (["serve", good, "--port", "0"], 2, "--port 0"),
        (["serve", good, "--max-upload-mb", "0"], 2, "--max-upload-mb 0.0"),
        (["serve", good, "--max-upload-mb", "nan"], 2, "--max-upload-mb nan"),
        (["serve", good, "--max-batch", "0"], 2, "--max-batch 0"),
        (["schedule", "--steps-per-epoch", "0", "--plot", str(tmp_path / "lr.png")], 2, "--steps-per-epoch 0"),
        (["schedule", "--epochs", "0"], 2, "--epochs 0"),
        (["schedule", "--epochs", "-1"], 2, "--epochs -1"),
        (["schedule", "--lr", "-1"], 2, "--lr -1.0"),
    ]
    if not torch.cuda.is_available():
        table.append((train + ["--accelerator", "gpu"], 2, "--accelerator gpu"))
    results = run_cli_table([argv for argv, _, _ in table], tmp_path)
    for (argv, code, words), (got, err) in zip(table, results):
        lines = error_lines(err)
        assert "Traceback" not in err, (argv, err)
        assert (got, len(lines)) == (code, 1), (argv, got, err)
        assert lines[0].startswith("petalnet: error: ") and words in lines[0], (argv, lines[0])
    assert not os.path.exists(out), "a refused train left a run folder"
    assert not os.path.exists(tmp_path / "conv"), "a refused convert left a folder"
    assert not os.path.exists(tmp_path / "m.onnx") and not os.path.exists(tmp_path / "lr.png")
    assert not runs["marker"].exists(), "a checkpoint's payload ran"


# Every numeric train option with values outside its range (independent of the rules in config.TrainConfig, written
# from the documented meaning of each option).
NEG = st.floats(max_value=-1e-9)   # below zero (not -0.0, which equals 0)
BAD_TRAIN_VALUES = {
    "--batch-size": st.integers(max_value=0),
    "--epochs": st.integers(max_value=0),
    "--image-size": st.one_of(st.integers(max_value=15), st.integers(min_value=4097)),
    "--workers": st.integers(max_value=-1),
    "--seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 32)),
    "--devices": st.integers(max_value=0),
    "--num-nodes": st.integers(max_value=0),
    "--freeze-epochs": st.integers(max_value=-1),
    "--unfreeze-from": st.integers(max_value=-1),
    "--num-classes": st.integers(max_value=0),
    "--lr": st.one_of(st.floats(max_value=0), st.just(math.nan), st.just(math.inf)),
    "--head-lr-scale": st.one_of(st.floats(max_value=0), st.just(math.nan)),
    "--weight-decay": NEG | st.just(math.inf),
    "--label-smoothing": NEG | st.floats(min_value=1),
    "--lr-start": NEG,
    "--min-lr": NEG,
    "--warmup-epochs": NEG,
    "--sustain-epochs": NEG,
    "--lr-decay": st.floats(max_value=0) | st.floats(min_value=1, exclude_min=True),
    "--affine": NEG,
    "--rrc": NEG | st.floats(min_value=1, exclude_min=True),
    "--color": NEG | st.floats(min_value=1, exclude_min=True),
    "--cutout": NEG | st.floats(min_value=1, exclude_min=True),
    "--mixup": NEG,
    "--cutmix": NEG,
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(BAD_TRAIN_VALUES)).flatmap(lambda f: st.tuples(st.just(f), BAD_TRAIN_VALUES[f])))
def test_every_numeric_train_option_out_of_range_is_exit_2_one_line_no_run_folder(tmp_path, capsys, case):
    flag, value = case
    out = tmp_path / "hyp-run"
    assert main(["train", "--data", PETALS_192, "--out", str(out), f"{flag}={value}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"petalnet: error: {flag} ") and "Traceback" not in err, err
    assert not out.exists()


def test_predict_request_without_file_answers_the_documented_error_json():
    """Item 15: FastAPI's {"detail": [...]} became the API's {"error": ...}."""
    from fastapi.testclient import TestClient

    from petalnet.models import create_model
    from petalnet.predict import Predictor
    from petalnet.serve.app import create_app
    model, _ = create_model("resnet10t", 12, pretrained=False)
    app = create_app(Predictor("tiny", model.eval(), 12, 32, (0.5,) * 3, (0.25,) * 3, "resnet10t"))
    with TestClient(app) as client:
        for r in (client.post("/api/predict", data={"other": "x"}), client.post("/api/predict")):
            assert r.status_code == 422 and set(r.json()) == {"error"}, r.text
            assert "'file'" in r.json()["error"] and "required" in r.json()["error"].lower()


CHOICE_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("kw", {}).get("choices")]


@pytest.mark.parametrize("field", CHOICE_FIELDS, ids=lambda f: f.name)
def test_every_train_choice_is_checked_in_the_python_api_too_no_run_folder(tmp_path, field):
    """argparse refuses a value outside an option's choices; ``petalnet.train`` (no argparse) must too,
    naming the flag, before anything is written. A resumed run's resolved precision stays accepted."""
    flag = field.metadata["flag"] or "--" + field.name.replace("_", "-")
    out = tmp_path / "api-run"
    with pytest.raises(OptionError, match=rf"^{flag} nonsense: choose {field.metadata['kw']['choices'][0]}, "):
        petalnet.train(PETALS_192, out, **{field.name: "nonsense"})
    assert not out.exists()
    TrainConfig(**{field.name: field.metadata["kw"]["choices"][-1]}).check()


def test_a_resumed_runs_resolved_precision_passes_the_check():
    for resolved in ("32-true", "bf16-mixed", "16-mixed"):
        TrainConfig(precision=resolved).check()
