"""Build any lowdose denoiser by name and config: ``build("unet", scales=6, ...)``.

The names are the ones artefacts (``model.yaml``) record, so a saved model can be
rebuilt from its card. torch only; never import dask here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from lowdose.errors import ConfigError
from lowdose.models.blindspot import BlindSpotUNet
from lowdose.models.compact import CompactUNet
from lowdose.models.dncnn import DnCNN
from lowdose.models.unet import UNet


def _small_unet(
    base_channels: int = 64, bias_free: bool = False, residual: bool = False, in_channels: int = 1
) -> nn.Module:
    # DURR-style small U-Net: two scales, widths b, 2b and a 4b bottleneck; its
    # receptive field is ≈ 45 px (measure with lowdose.models.receptive).
    widths = [base_channels, 2 * base_channels, 4 * base_channels]
    return UNet(scales=2, bias_free=bias_free, residual=residual, in_channels=in_channels, widths=widths)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "dncnn": DnCNN,
    "small_unet": _small_unet,
    "blindspot": BlindSpotUNet,
    "compact": CompactUNet,
}
"""Model name → constructor taking the config as keyword arguments."""


def build(name: str, **config: Any) -> nn.Module:
    """Build the model registered as ``name`` with keyword ``config``.

    Raises
    ------
    ConfigError
        Unknown model name or a config key the model does not take.

    Examples
    --------
    >>> net = build("compact", base_channels=8, scales=2)
    >>> type(net).__name__
    'CompactUNet'
    """
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
    try:
        return factory(**config)
    except TypeError as err:
        raise ConfigError(f"model {name!r}: bad config {config}: {err}") from None
