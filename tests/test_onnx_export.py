"""petalnet.onnx_export on a tiny checkpoint (tests/serve/test_onnx.py exports a trained Lite0 run and
compares predictions through predict and serve)."""
import json
import os

import numpy as np
import pytest
import torch

from petalnet import checkpoint
from petalnet.errors import PetalnetError
from petalnet.models import create_model
from petalnet.onnx_export import export_onnx
from petalnet.onnx_model import OnnxModel

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random resnet10t, 7 classes, 32 px, saved as a run folder's best checkpoint, and its torch model."""
    torch.manual_seed(0)
    model, _ = create_model("resnet10t", 7, pretrained=False)
    with torch.no_grad():   # random weights and batch-norm statistics everywhere (the new head starts at zero)
        for p in model.parameters():
            p.normal_(0, 0.2)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    model.eval()
    run = tmp_path_factory.mktemp("run")
    os.makedirs(run / "checkpoints")
    checkpoint.save({"model": model.state_dict(), "model_name": "resnet10t", "num_classes": 7, "image_size": 32,
                     "mean": MEAN, "std": STD}, str(run / "checkpoints" / "best.pt"))
    out = str(run / "tiny.onnx")
    assert export_onnx(str(run), out) == out
    return model, out


def test_onnxruntime_logits_match_torch(tiny):
    model, path = tiny
    m = OnnxModel(path)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))   # not the export's batch of 2
    with torch.no_grad():
        want = model(x)
    got = m(x)
    assert got.shape == (3, 7) and got.dtype == torch.float32
    assert want.abs().max() > 0.1   # real logits, not the zero head
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    assert not torch.equal(got[0], got[1])   # each image its own answer
    one = m(x[2:])
    assert torch.allclose(one, got[2:], atol=1e-5)   # batch size is dynamic
    assert m.eval() is m


def test_metadata_round_trip(tiny):
    _, path = tiny
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["petalnet.image_size"] == "32" and meta["petalnet.num_classes"] == "7"
    assert json.loads(meta["petalnet.mean"]) == list(MEAN) and json.loads(meta["petalnet.std"]) == list(STD)
    assert meta["petalnet.model_name"] == "resnet10t"
    m = OnnxModel(path)
    assert (m.image_size, m.num_classes, m.model_name, m.mean, m.std) == (32, 7, "resnet10t", MEAN, STD)
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]


def test_foreign_onnx_file_and_missing_run_are_clear_errors(tmp_path):
    plain = str(tmp_path / "plain.onnx")
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), plain, dynamo=False)
    with pytest.raises(PetalnetError, match=r"plain.onnx: not exported by `petalnet export` \(no petalnet metadata\)"):
        OnnxModel(plain)
    out = tmp_path / "never.onnx"
    with pytest.raises(PetalnetError, match="no such checkpoint"):
        export_onnx(str(tmp_path / "missing-run"), str(out))
    assert not out.exists() and os.listdir(tmp_path) == ["plain.onnx"]   # no partial file left behind


def test_export_replaces_an_existing_file_whole(tiny, tmp_path):
    """Writing over an older export leaves a loadable file with the new model's numbers."""
    model, path = tiny
    target = tmp_path / "model.onnx"
    target.write_bytes(b"an older, different file")
    export_onnx(os.path.dirname(path), str(target))   # the run folder the fixture exported from
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert np.allclose(OnnxModel(str(target))(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
