"""prepare_for_inference: the rewritten network computes the same function as the trained one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lowdose.models.layers as layers
from lowdose.models.artefact import load_model
from lowdose.models.layers import InferenceConv2d, conv3x3, fuse_conv_norm_relu, prepare_for_inference
from lowdose.models.registry import build

torch.set_num_threads(1)


def _randomise_norms(model: nn.Module, seed: int) -> nn.Module:
    """Give every norm non-trivial running statistics and affine parameters (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, layers.BiasFreeBatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.running_sq.copy_(0.2 + torch.rand(m.running_sq.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(0.2 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _compare(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> float:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 3
    prepared = prepare_for_inference(model)
    with torch.inference_mode():
        ref = model(x)
        out = prepared(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == ref.shape
    return _rel_err(out, ref)


def test_shipped_default_matches_unfused_and_is_left_unchanged():
    model, _card = load_model("default")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # 1024² (batch 2: one frame at a time inside) the full-size path; 200 × 136 the
    # reflection padding and crop.
    assert _compare(model, (2, 1, 1024, 1024)) < 1e-5
    assert _compare(model, (2, 1, 200, 136), seed=1) < 1e-5
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not getattr(model, "inference_path", False)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("unet", {"scales": 2, "base_channels": 4, "bias_free": True}),  # bias-free BN folded
        ("small_unet", {"base_channels": 4}),  # ordinary BN with conv biases folded
        ("dncnn", {"depth": 5, "channels": 8}),
        ("compact", {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8, "norm": "batch"}),
    ],
)
def test_norm_folding_matches_eval_model(name, config):
    model = _randomise_norms(build(name, **config), seed=3)
    assert _compare(model, (2, 1, 120, 104)) < 1e-5


def test_every_norm_and_relu_is_folded():
    model = _randomise_norms(build("unet", scales=2, base_channels=4, bias_free=True), seed=0)
    prepared = prepare_for_inference(model)
    kinds = {type(m) for m in prepared.modules()}
    assert layers.BiasFreeBatchNorm2d not in kinds and nn.ReLU not in kinds
    assert sum(isinstance(m, InferenceConv2d) for m in prepared.modules()) == 10  # 5 blocks × 2


def test_border_fix_and_unfused_relu_match_replicate_conv(monkeypatch):
    conv = conv3x3(5, 7, bias=True).eval()
    x = torch.randn(2, 5, 101, 97)
    ref = torch.relu(conv(x))
    with torch.inference_mode():
        fused = InferenceConv2d(conv.weight.detach(), conv.bias.detach(), conv, relu=True)
        assert fused.border_fix and 101 * 97 >= layers._BORDER_FIX_MIN_PIXELS
        assert _rel_err(fused(x), ref) < 1e-6
        assert _rel_err(fused(x.contiguous(memory_format=torch.channels_last)), ref) < 1e-6
        padded = fused.forward_padded(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"))
        assert _rel_err(layers.interior(padded), ref) < 1e-6
        assert torch.equal(padded[..., 0, :], padded[..., 1, :])
        monkeypatch.setattr(layers, "_FUSED_RELU", False)
        assert _rel_err(fused(x), ref) < 1e-6


def test_compact_inference_path_without_the_fused_kernels(monkeypatch):
    # The plain-conv fallback (no oneDNN pointwise kernels) computes the same function.
    monkeypatch.setattr(layers, "_FUSED_RELU", False)
    model = build("compact", unshuffle=2, scales=2, base_channels=4, max_channels=8).eval()
    assert _compare(model, (1, 1, 200, 232), seed=2) < 1e-5


def test_fusing_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_norm_relu(build("dncnn", depth=3, channels=4).train())
