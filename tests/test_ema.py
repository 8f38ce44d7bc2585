"""--ema: the moving average of the weights is what validation scores, best.pt keeps and predict uses;
last.pt keeps both, and a resumed run continues the same average."""
import json

import pytest
import torch

import petalnet
from petalnet.data.synthetic import synthetic_data
from petalnet.engine import TrainConfig, train
from petalnet.ema import make_average, update_average

RUN = dict(epochs=2, precision="32", workers=0, quiet=True, pretrained=False, unfreeze_from=5,
           freeze_backbone=False, lr=3e-3, image_size=64, tta="none", seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("syn")))


def test_average_warms_up_as_tensorflows_then_holds_its_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    average = make_average(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    update_average(average, model, 0.9, 0)       # decay min(0.9, 1/10): mostly the new weights
    assert average.module.weight[0, 0].item() == pytest.approx(0.9)
    update_average(average, model, 0.9, 1000)    # decay 0.9
    assert average.module.weight[0, 0].item() == pytest.approx(0.9 + 0.1 * 0.1)


def test_best_checkpoint_holds_the_validated_average(data, tmp_path):
    summary = train(TrainConfig(data=data, out=str(tmp_path / "ema"), ema=0.9, **RUN))
    last = torch.load(tmp_path / "ema" / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "ema" / "checkpoints" / "best.pt", weights_only=True)
    assert "ema" in last
    trained = [k for k in last["model"] if k.startswith("blocks.6") and last["model"][k].is_floating_point()]
    assert any(not torch.equal(last["ema"]["module." + k], last["model"][k]) for k in trained)
    if summary["best_epoch"] == 2:   # the average at the last epoch, not the raw weights
        for k in trained:
            assert torch.equal(best["model"][k], last["ema"]["module." + k]), k
    # what validation scored is what best.pt predicts
    run = petalnet.load(str(tmp_path / "ema"))
    metrics = run.evaluate(split="val", tta="none")
    assert metrics["macro_f1"] == pytest.approx(summary["best_val_macro_f1"], abs=1e-6)
    assert json.loads((tmp_path / "ema" / "config.json").read_text())["ema"] == 0.9
    plain = train(TrainConfig(data=data, out=str(tmp_path / "plain"), **RUN))
    raw = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=True)
    assert "ema" not in raw
    for k in trained:   # the same steps (same seed): only what is kept differs
        assert torch.allclose(raw["model"][k], last["model"][k], atol=1e-5), k


def test_resumed_run_continues_the_same_average(data, tmp_path):
    whole = train(TrainConfig(data=data, out=str(tmp_path / "whole"), ema=0.9, deterministic=True, **RUN))
    # 15 steps an epoch; --max-steps 12 is kept by the run, so each resume runs 12 more: stops inside
    # epoch 1, then inside epoch 2, then ends
    resumed = train(TrainConfig(data=data, out=str(tmp_path / "cut"), ema=0.9, deterministic=True, max_steps=12, **RUN))
    for _ in range(2):
        assert resumed["stopped_at"] is not None
        resumed = train(TrainConfig(quiet=True), resume=str(tmp_path / "cut"))
    assert resumed["stopped_at"] is None
    for key in ("best_val_macro_f1", "best_val_accuracy", "best_epoch"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-9), key
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["ema"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["ema"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
