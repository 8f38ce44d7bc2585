"""CPU inference preparation: batch norm folded exactly where it is safe, chunked bf16/fp32 forward."""
import timm
import torch
from torch import nn

from petalnet.accel import cpu_supports_bf16
from petalnet.inference import CPUInferenceModel, conv_bn_pairs, fold_batch_norm


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine terms, so a wrong fold shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def _batch(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_efficientnet_folds_every_batch_norm_and_keeps_outputs():
    model = _randomise_bn(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=7))
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model.train()   # the caller's mode comes back unchanged
    folded, count = fold_batch_norm(model, 64)
    assert model.training
    assert count == bns == 49
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bns   # the original is untouched
    x = _batch(3, 64)
    with torch.no_grad():
        want, got = model.eval()(x), folded(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class _ConvFeedsTwo(nn.Module):
    """A convolution whose output goes to a batch norm AND a residual sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.head((self.bn(y) + y).mean((2, 3)))


def test_a_fold_that_changes_outputs_is_refused(recwarn):
    model = _randomise_bn(_ConvFeedsTwo())
    assert conv_bn_pairs(model, 16) == [("conv", "bn")]
    kept, count = fold_batch_norm(model, 16)
    assert count == 0 and isinstance(kept.bn, nn.BatchNorm2d)
    assert any("not folded" in str(w.message) for w in recwarn)
    x = _batch(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(kept(x), model(x))


def test_chunked_forward_matches_the_model_on_any_batch_size():
    model = _randomise_bn(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=7))
    x = _batch(11, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(x)
    fp32 = CPUInferenceModel(model, 64, bf16=False, chunk=4)   # 4 + 4 + 3
    got = fp32(x)
    assert got.dtype == torch.float32 and got.shape == (11, 7)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    if cpu_supports_bf16():
        low = CPUInferenceModel(model, 64, bf16=True, chunk=4)
        assert next(low.model.parameters()).dtype == torch.bfloat16
        out = low(x)
        assert out.dtype == torch.float32
        assert (out - want).abs().max() < 0.1 * want.abs().max()
