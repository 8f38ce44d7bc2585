import numpy as np
import pytest
from fastapi.testclient import TestClient

from petalnet.cli import main
from petalnet.data.dataset import open_split
from petalnet.errors import PetalnetError
from petalnet.predict import load_predictor, predict_dataset
from petalnet.serve.app import create_app


@pytest.fixture(scope="module")
def onnx_file(served_run, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    assert main(["export", served_run, "--format", "onnx", "--output", path]) == 0
    return path


def test_onnx_matches_pytorch_on_petals_mini_val(served_run, onnx_file, petals):
    ds = open_split(petals, "val")
    torch_probs, _ = predict_dataset([load_predictor(served_run)], ds, precision="32")
    onnx_probs, _ = predict_dataset([load_predictor(onnx_file)], ds)
    assert (torch_probs.argmax(1) == onnx_probs.argmax(1)).all()
    assert np.abs(torch_probs - onnx_probs).max() < 1e-3


def test_onnx_metadata_and_dynamic_batch(onnx_file):
    import onnx
    meta = {p.key: p.value for p in onnx.load(onnx_file).metadata_props}
    assert meta["petalnet.image_size"] == "64" and meta["petalnet.mean"] == "[0.5, 0.5, 0.5]"
    model = load_predictor(onnx_file).model
    import torch
    for batch in (1, 5):
        assert model(torch.zeros(batch, 3, 64, 64)).shape == (batch, 104)


def test_predict_and_serve_onnx(onnx_file, photo_file, daisy_jpeg, capsys, tmp_path):
    assert main(["predict", onnx_file, photo_file, "--json"]) == 0
    import json
    answer = json.loads(capsys.readouterr().out)[0]
    assert len(answer["top"]) == 5
    with TestClient(create_app(load_predictor(onnx_file))) as client:
        r = client.post("/api/predict", files={"file": ("d.jpg", daisy_jpeg, "image/jpeg")})
        assert r.status_code == 200 and r.json()["top"][0]["label"] == answer["top"][0]["label"]
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(PetalnetError, match="bad.onnx: not a loadable ONNX model"):
        load_predictor(str(tmp_path / "bad.onnx"))
    assert main(["export", onnx_file.replace("model.onnx", "missing-run"), "--output", str(tmp_path / "m.onnx")]) == 1
