import numpy as np
import pytest
import torch
from torch import nn

from lowdose.analysis.explain import effective_filter
from lowdose.errors import LowdoseInputError

torch.set_num_threads(1)


def _bias_free_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 1, 3, padding=1, bias=False),
    )


@pytest.mark.parametrize(("y", "x"), [(10, 12), (0, 0), (23, 17)])
def test_bias_free_output_equals_filter_dot_input(y: int, x: int) -> None:
    model = _bias_free_net()
    image = np.random.default_rng(0).poisson(0.45, (24, 18)).astype(np.float32) + 0.1
    filt = effective_filter(model, image, y, x)
    with torch.no_grad():
        out = model(torch.tensor(image)[None, None])[0, 0, y, x].item()
    assert filt.shape == image.shape
    assert out == pytest.approx(float((filt * image).sum()), rel=1e-5, abs=1e-6)
    # Three 3×3 layers: the filter is zero outside a 7×7 window around the pixel.
    yy, xx = np.nonzero(filt)
    assert np.all(np.abs(yy - y) <= 3) and np.all(np.abs(xx - x) <= 3)


def test_network_with_bias_is_not_linear() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 1))
    with torch.no_grad():
        model[2].bias.fill_(0.5)
    image = np.ones((8, 8), dtype=np.float32)
    filt = effective_filter(model, image, 4, 4)
    with torch.no_grad():
        out = model(torch.tensor(image)[None, None])[0, 0, 4, 4].item()
    assert out != pytest.approx(float((filt * image).sum()))
    assert model.training  # restored


def test_bad_pixel() -> None:
    with pytest.raises(LowdoseInputError, match="outside"):
        effective_filter(_bias_free_net(), np.zeros((4, 4)), 4, 0)


def test_registry_bias_free_unet_is_exactly_locally_linear() -> None:
    from lowdose.models.registry import build

    torch.manual_seed(1)
    model = build("small_unet", base_channels=4, bias_free=True)
    image = np.random.default_rng(1).poisson(0.45, (32, 32)).astype(np.float32)
    filt = effective_filter(model, image, 13, 20)
    with torch.no_grad():
        model.eval()
        out = model(torch.tensor(image)[None, None])[0, 0, 13, 20].item()
    assert out != 0.0
    assert out == pytest.approx(float((filt * image).sum()), rel=1e-4)
