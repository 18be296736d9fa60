"""DnCNN (Zhang et al. 2017): the paper's small-receptive-field CNN baseline.

``depth`` 3×3 convolutions of ``channels`` features (20 × 64 by default,
receptive field 41 px); batch norm in the middle layers; residual learning (the
network predicts the noise, the output is input minus noise). torch only.
"""

from __future__ import annotations

import torch
from torch import nn

from lowdose.models.layers import conv3x3, norm_layer


class DnCNN(nn.Module):
    """DnCNN denoiser: counts in, expected counts out.

    Parameters
    ----------
    depth
        Number of convolution layers (20).
    channels
        Feature width (64).
    bias_free
        Bias-free norm and no conv biases (homogeneous network) if True.
    """

    def __init__(self, depth: int = 20, channels: int = 64, bias_free: bool = False, in_channels: int = 1):
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be >= 2")
        norm = "bias_free" if bias_free else "batch"
        layers: list[nn.Module] = [conv3x3(in_channels, channels, bias=not bias_free), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [
                conv3x3(channels, channels, bias=False),
                norm_layer(channels, norm),
                nn.ReLU(inplace=True),
            ]
        layers.append(conv3x3(channels, in_channels, bias=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x - noise(x)``."""
        out: torch.Tensor = x - self.body(x)
        return out
