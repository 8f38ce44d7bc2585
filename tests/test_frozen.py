"""A frozen backbone on CPU runs from a prepared copy (batch norm folded, weights cast once) while its
head trains on the model itself: same logits and head gradients as running the model."""
import pytest
import timm
import torch
import torch.nn.functional as F

from petalnet.accel import cpu_supports_bf16
from petalnet.frozen import CPUFrozenBackbone, features_frozen, set_trainable_from
from petalnet.frozen import set_backbone_frozen, train_mode
from tests.test_inference import _batch, _randomise_bn

SIZE = 64


def _frozen_lite0():
    torch.manual_seed(0)
    model = _randomise_bn(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=7))
    set_backbone_frozen(model, True)
    train_mode(model)
    return model.to(memory_format=torch.channels_last)


def _close(got, want, tol=1e-5):
    return torch.allclose(got, want, rtol=tol, atol=tol * want.abs().max().item())


def _step(net, model, x, y):
    """Loss and the head's gradient after one backward through ``net``; no other parameter gets one."""
    loss = F.cross_entropy(net(x).float(), y)
    loss.backward()
    grads = [p.grad.clone() for p in model.get_classifier().parameters()]
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("classifier"))
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def test_same_logits_and_head_gradients_as_the_model_and_follows_the_trained_head():
    model = _frozen_lite0()
    net = CPUFrozenBackbone(model, SIZE, bf16=False)
    x, y = _batch(5, SIZE), torch.tensor([0, 3, 6, 2, 2])
    with torch.no_grad():
        assert _close(net(x), model(x))
    loss_a, grads_a = _step(net, model, x, y)
    loss_b, grads_b = _step(model, model, x, y)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for a, b in zip(grads_a, grads_b):
        assert _close(a, b, 1e-4)
    with torch.no_grad():   # the head is the model's own: a step on it shows in the next forward
        model.classifier.weight.add_(torch.randn_like(model.classifier.weight))
        assert _close(net(x), model(x))
    assert all(k.startswith("model.") for k in net.state_dict())   # the copy is not part of the state


@pytest.mark.skipif(not cpu_supports_bf16(), reason="the CPU has no bf16")
def test_bf16_copy_is_as_close_to_fp32_as_autocast_is():
    model = _frozen_lite0()
    net = CPUFrozenBackbone(model, SIZE, bf16=True)
    x = _batch(20, SIZE)   # more than one chunk of 16
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast("cpu", torch.bfloat16):
            got, autocast = net(x).float(), model(x).float()
    assert got.shape == (20, 7)
    err = lambda t: ((t - fp32).norm() / fp32.norm()).item()   # noqa: E731
    # random BN statistics make this net sensitive: autocast itself is ~4 % off fp32 here
    assert err(got) <= 1.5 * err(autocast) + 1e-3


def test_modes_and_when_it_applies():
    model = _frozen_lite0()
    assert features_frozen(model, SIZE)
    net = CPUFrozenBackbone(model, SIZE, bf16=False)
    net.eval()
    assert not model.training and not model.classifier.training
    net.train()
    assert model.classifier.training and not model.bn1.training and not model.blocks[0][0].bn1.training
    set_backbone_frozen(model, False)
    assert not features_frozen(model, SIZE)
    set_trainable_from(model, 3)   # partial fine-tune: the cache path, not this one
    assert not features_frozen(model, SIZE)
    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=7)
    set_backbone_frozen(resnet, True)
    assert features_frozen(resnet, SIZE)
    with torch.no_grad():
        x = _batch(3, SIZE)
        assert _close(CPUFrozenBackbone(resnet.eval(), SIZE, bf16=False)(x), resnet(x))
