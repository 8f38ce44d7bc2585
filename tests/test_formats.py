"""Issue 18, deliverable 4: the same model gives the same predictions in every format: the ONNX file
carries the run's TTA and predict applies it; ``--precision`` (auto on a CPU: float32, or bf16 for a model
trained in bf16 where the CPU runs bf16 natively)."""
import os

import numpy as np
import pytest
import torch

from petalnet import checkpoint
from petalnet.accel import DevicePreprocess
from petalnet.cli import main
from petalnet.data.dataset import open_split
from petalnet.errors import OptionError
from petalnet.models import create_model
from petalnet.predict import inference_precision, load_predictor, predict_dataset
from tests.conftest import PETALS_192

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def flip_run(tmp_path_factory, petals):
    """A random resnet10t (104 classes, 32 px) with a random head on its features standardised over
    petals-mini test images (else one class wins everywhere), saved as a run folder whose best checkpoint
    says TTA flip, as the default recipe's runs do; and its ONNX export."""
    torch.manual_seed(0)
    model, _ = create_model("resnet10t", 104, pretrained=False)
    ds = open_split(petals, "test")
    x = DevicePreprocess(torch.device("cpu"), MEAN, STD, 32, channels_last=False)(
        torch.stack([ds.load(i)[0] for i in range(0, len(ds), 4)]))
    with torch.no_grad():
        f = model.eval().forward_head(model.forward_features(x), pre_logits=True)
        model.fc.weight.copy_(torch.randn(104, f.shape[1]) / f.std(0).clamp_min(1e-6))
        model.fc.bias.copy_(-(model.fc.weight @ f.mean(0)))
    run = tmp_path_factory.mktemp("flip")
    os.makedirs(run / "checkpoints")
    checkpoint.save({"model": model.eval().state_dict(), "model_name": "resnet10t", "num_classes": 104,
                     "image_size": 32, "mean": MEAN, "std": STD, "tta": "flip"},
                    str(run / "checkpoints" / "best.pt"))
    onnx_file = str(run / "model.onnx")
    assert main(["export", str(run), "--output", onnx_file]) == 0
    return str(run), onnx_file


def _labels(path):
    with open(path) as fh:
        return [line.strip().split(",")[1] for line in fh.readlines()[1:]]


def test_predict_onnx_and_run_give_identical_labels(flip_run, petals, tmp_path):
    run, onnx_file = flip_run
    assert load_predictor(onnx_file).tta == "flip"   # the metadata carries the run's views
    got = {}
    for name, model, extra in (("run", run, ["--device", "cpu"]), ("onnx", onnx_file, []),
                               ("onnx-none", onnx_file, ["--tta", "none"])):
        out = str(tmp_path / f"{name}.csv")
        assert main(["predict", model, "--data", petals, "--output", out, *extra]) == 0
        got[name] = _labels(out)
    assert len(got["run"]) == 503 and got["onnx"] == got["run"]
    # the flip views matter for this model: without them (the old ONNX path) labels differ
    assert sum(a != b for a, b in zip(got["onnx-none"], got["run"])) > 0


def test_precision_auto_is_float32_on_cpu(flip_run, petals):
    run, onnx_file = flip_run
    cpu = torch.device("cpu")
    assert inference_precision("auto", cpu) == "32" and inference_precision("auto", torch.device("cuda")) == "bf16"
    assert not load_predictor(run).trained_bf16   # its checkpoint says nothing of training: float32
    with pytest.raises(OptionError, match="--precision 16: choose auto, 32, bf16"):
        inference_precision("16", cpu)
    with pytest.raises(OptionError, match="--precision bf16: an ONNX model runs in float32"):
        inference_precision("bf16", cpu, [load_predictor(onnx_file)])
    ds = open_split(os.path.join(PETALS_192, "val", "01-192x192-261.tfrec"))
    p = load_predictor(run)
    auto, _ = predict_dataset([p], ds, precision="auto")
    fp32, _ = predict_dataset([p], ds, precision="32")
    bf16, _ = predict_dataset([p], ds, precision="bf16")
    assert np.array_equal(auto, fp32)
    assert np.abs(bf16 - fp32).max() > 1e-4   # bf16 really ran: other numbers
    with pytest.raises(SystemExit) as e:   # argparse: the choices, exit 2
        main(["evaluate", run, "--data", petals, "--precision", "16"])
    assert e.value.code == 2


def test_precision_auto_follows_bf16_training_where_the_cpu_runs_bf16(flip_run, tmp_path, monkeypatch):
    run, onnx_file = flip_run
    state = checkpoint.load_model(os.path.join(run, "checkpoints", "best.pt"))
    cpu, models = torch.device("cpu"), {}
    for precision in ("bf16-mixed", "32-true"):
        path = str(tmp_path / f"{precision}.pt")
        checkpoint.save({**state, "config": {"precision": precision}}, path)
        models[precision] = load_predictor(path)
    bf16, fp32, onnx = models["bf16-mixed"], models["32-true"], load_predictor(onnx_file)
    assert bf16.trained_bf16 and not fp32.trained_bf16
    monkeypatch.setattr("petalnet.predict.cpu_supports_bf16", lambda: True)
    assert inference_precision("auto", cpu, [bf16]) == "bf16"
    assert inference_precision("auto", cpu, [bf16, fp32]) == "32"   # an ensemble: every member trained in bf16
    assert inference_precision("auto", cpu, [bf16, onnx]) == "32"
    assert inference_precision("32", cpu, [bf16]) == "32"
    monkeypatch.setattr("petalnet.predict.cpu_supports_bf16", lambda: False)   # no native bf16: float32
    assert inference_precision("auto", cpu, [bf16]) == "32"


def test_serve_gives_the_run_and_its_onnx_export_the_same_answer(flip_run, petals):
    from fastapi.testclient import TestClient

    from petalnet.serve.app import create_app
    ds = open_split(petals, "val")
    jpegs = [ds.read(i)["image"] for i in range(0, 60, 6)]
    answers = {}
    for model in flip_run:
        with TestClient(create_app(load_predictor(model))) as client:
            answers[model] = [client.post("/api/predict", files={"file": ("f.jpg", j, "image/jpeg")}).json()["top"]
                              for j in jpegs]
    run, onnx_file = (answers[m] for m in flip_run)
    for a, b in zip(run, onnx_file):
        assert [t["label"] for t in a] == [t["label"] for t in b]
        assert max(abs(x["probability"] - y["probability"]) for x, y in zip(a, b)) < 1e-3
