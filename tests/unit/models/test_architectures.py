"""Architecture facts: parameter count, shapes, homogeneity, blind spot, receptive fields."""

from __future__ import annotations

import pytest
import torch

from lowdose.errors import ConfigError
from lowdose.models import build
from lowdose.models.receptive import flops_per_frame, receptive_field
from lowdose.models.unet import level_widths

torch.set_num_threads(1)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_unet_has_published_parameter_count() -> None:
    with torch.device("meta"):
        model = build("unet", scales=6, base_channels=128, bias_free=True)
    assert _count(model) == 70_504_960


def test_four_scale_unet_matches_paper_size() -> None:
    with torch.device("meta"):
        model = build("unet", scales=4, base_channels=128, bias_free=True)
    assert round(_count(model) / 1e6, 1) == 5.6


def test_level_widths_follow_paper_rule() -> None:
    assert level_widths(6, 1) == [1, 1, 1, 2, 4, 8, 8]
    assert level_widths(4, 2) == [2, 2, 2, 4, 4]


SMALL_CONFIGS = [
    ("unet", {"scales": 3, "base_channels": 4}),
    ("unet", {"scales": 2, "base_channels": 4, "bias_free": False, "residual": True}),
    ("dncnn", {"depth": 5, "channels": 8}),
    ("small_unet", {"base_channels": 4}),
    ("blindspot", {"scales": 2, "width": 4}),
    ("compact", {"scales": 2, "base_channels": 4}),
]


@pytest.mark.parametrize(("name", "config"), SMALL_CONFIGS)
@pytest.mark.parametrize("shape", [(37, 21), (16, 16), (9, 40)])
def test_output_shape_equals_input_shape(name: str, config: dict, shape: tuple[int, int]) -> None:
    model = build(name, **config).eval()
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("unet", {"scales": 3, "base_channels": 4, "bias_free": True}),
        ("dncnn", {"depth": 5, "channels": 8, "bias_free": True}),
        ("compact", {"scales": 2, "base_channels": 4}),
        ("compact", {"scales": 2, "base_channels": 4, "norm": "bias_free"}),
    ],
)
def test_bias_free_models_are_homogeneous(name: str, config: dict) -> None:
    torch.manual_seed(0)
    model = build(name, **config)
    model.train()
    with torch.no_grad():  # give bias-free norms non-trivial running statistics
        model(torch.rand(2, 1, 32, 32) * 3)
    model.eval()
    x = torch.rand(1, 1, 45, 38)
    with torch.no_grad():
        base = model(x)
        assert base.abs().max() > 0
        for alpha in (0.1, 0.45, 7.0):
            torch.testing.assert_close(model(alpha * x), alpha * base, rtol=1e-4, atol=1e-6 * alpha)


def test_ordinary_batch_norm_unet_is_not_homogeneous() -> None:
    torch.manual_seed(0)
    model = build("unet", scales=2, base_channels=4, bias_free=False)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 32))
    model.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(5 * x), 5 * model(x), rtol=1e-3)


def test_blindspot_output_ignores_its_own_pixel() -> None:
    torch.manual_seed(0)
    model = build("blindspot", scales=2, width=8).eval()
    x = torch.rand(1, 1, 24, 19, requires_grad=True)
    for y, xx in [(0, 0), (11, 9), (23, 18), (5, 17)]:
        x.grad = None
        model(x)[0, 0, y, xx].backward()
        assert x.grad is not None
        grad = x.grad[0, 0]
        assert grad[y, xx] == 0
        # ...but its neighbours on all four sides do matter.
        neighbours = [
            grad[yy, xq]
            for yy, xq in [(y - 1, xx), (y + 1, xx), (y, xx - 1), (y, xx + 1)]
            if 0 <= yy < 24 and 0 <= xq < 19
        ]
        assert all(g != 0 for g in neighbours)


def test_receptive_fields() -> None:
    torch.manual_seed(0)
    assert receptive_field(build("dncnn", depth=20, channels=4), size=96) == 41
    small = receptive_field(build("small_unet", base_channels=4), size=128)
    assert 40 <= small <= 55  # measured 52 px: bilinear up-sampling widens the textbook 44
    compact = receptive_field(build("compact", base_channels=4), size=1024)
    assert compact >= 400


def test_flops_counted_from_conv_layers() -> None:
    model = build("dncnn", depth=3, channels=2)
    # 1->2, 2->2, 2->1 3×3 convs on 64² pixels, 2 FLOPs per multiply-add.
    assert flops_per_frame(model, size=64) == 2 * 9 * (2 + 4 + 2) * 64 * 64


def test_unknown_model_and_bad_config_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        build("nope")
    with pytest.raises(ConfigError, match="bad config"):
        build("compact", wings=3)


@pytest.mark.parametrize(("base", "most"), [(8, 16), (6, 8), (4, 12)])
def test_widened_compact_computes_the_narrow_function(base: int, most: int) -> None:
    from lowdose.models.compact import widen

    torch.manual_seed(3)
    narrow = build("compact", unshuffle=2, scales=3, base_channels=4, max_channels=8).eval()
    with torch.no_grad():  # non-trivial weights everywhere (a fresh init is near-linear)
        for p in narrow.parameters():
            p.normal_(0.0, 0.3)
    wide = widen(narrow, base, most, seed=1).eval()
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    x = torch.poisson(torch.full((2, 1, 40, 56), 0.45, dtype=torch.float64))
    with torch.no_grad():  # float64: only summation order differs between the two
        torch.testing.assert_close(wide.double()(x), narrow.double()(x), rtol=1e-12, atol=1e-12)
        # the new channels are live: their incoming weights are not zero
        old_state = narrow.state_dict()
        grown = [k for k, w in wide.state_dict().items() if w.shape[0] > old_state[k].shape[0]]
        assert grown and all(wide.state_dict()[k][old_state[k].shape[0] :].abs().sum() > 0 for k in grown)
        assert wide(x).abs().max() > 0.1  # a non-trivial function was compared


def test_widen_refuses_narrower_levels_and_normed_models() -> None:
    from lowdose.models.compact import widen

    narrow = build("compact", unshuffle=2, scales=3, base_channels=4, max_channels=8)
    with pytest.raises(ValueError, match="narrower"):
        widen(narrow, 8, 4)
    normed = build("compact", unshuffle=2, scales=2, base_channels=4, max_channels=8, norm="batch")
    with pytest.raises(ValueError, match="biases or norm"):
        widen(normed, 8, 16)
