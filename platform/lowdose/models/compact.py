"""``compact``: the default lowdose denoiser, a U-Net run at reduced resolution.

Frames at 0.061 Å/px are heavily oversampled (information limit ≈ 12 px, atomic
columns ≈ 30 px apart), so a :class:`~torch.nn.PixelUnshuffle` front end folds
each ``unshuffle × unshuffle`` block of pixels into channels *losslessly* and
the whole U-Net runs on a grid ``unshuffle²`` times smaller; a 1×1 head and a
:class:`~torch.nn.PixelShuffle` put the full resolution back. Every 3×3 conv at
level ``l`` then spans ``3·unshuffle·2**l`` input pixels, which buys a receptive
field of several hundred pixels for a few GFLOPs per 1024² frame.

Bias-free by default (no conv biases, no norm): the network is exactly
positively homogeneous, so one model serves every dose, and with no batch
statistics data-parallel training is identical to single-process training with
the same global batch. torch only; never import dask here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lowdose.models.layers import (
    InferenceConv2d,
    block_padded,
    crop_to,
    empty_padded,
    head_pixel_shuffle_padded,
    interior,
    max_pool_2x2_padded,
    pad_to_multiple,
    pixel_unshuffle_padded,
    replicate_ring_,
)
from lowdose.models.unet import UNetCore

_SPLIT_MIN_PIXELS = 768 * 768
"""On CPU, batches of frames at least this large run one frame at a time (see forward_inference).

Measured (batch 4, one thread, CPU ms per frame, split vs whole batch): 1024² 36.3 vs 39.0,
512² 10.0 vs 9.9, 256² 4.0 vs 2.9 (the per-op overhead then dominates)."""


def compact_widths(scales: int, base_channels: int, max_channels: int) -> list[int]:
    """Level widths: ``b, 2b, 4b, ...`` capped at ``max_channels``; bottleneck repeats the last."""
    widths = [min(base_channels * 2**level, max_channels) for level in range(scales)]
    return [*widths, widths[-1]]


def widen(model: CompactUNet, base_channels: int, max_channels: int, seed: int = 0) -> CompactUNet:
    """A wider :class:`CompactUNet` that computes exactly the function of ``model``.

    Every level gets at least its old width (``compact_widths(scales, base_channels,
    max_channels)``). The old channels keep their weights; each new channel gets a fresh
    init (seeded) on its inputs and zero weights into the old channels, so it adds nothing
    until training moves those weights. Fine-tuning a wider network from a trained narrow
    one (``init_weights`` in a training config) starts at the narrow one's quality instead
    of at a random init.

    Only bias-free, norm-free models (the ``compact`` default) can be widened: their state
    is conv weights alone.
    """
    old_widths = [_conv(block, 3).out_channels for block in model.core.encoder]
    new_widths = compact_widths(model.scales, base_channels, max_channels)
    if any(new < old for new, old in zip(new_widths, old_widths, strict=True)):
        raise ValueError(f"widen: widths {new_widths} are narrower than the model's {old_widths} somewhere")
    state = model.state_dict()
    if any(value.ndim != 4 for value in state.values()):
        raise ValueError("widen: only a compact model without biases or norm layers can be widened")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wide = CompactUNet(
            model.unshuffle,
            model.scales,
            base_channels,
            max_channels,
            in_channels=_conv(model.core.encoder[0], 0).in_channels // model.unshuffle**2,
        )
    wide_state = wide.state_dict()
    for key, old in state.items():
        new = wide_state[key].clone()
        new[: old.shape[0]] = 0
        new[: old.shape[0], _old_inputs(key, old.shape[1], new.shape[1], old_widths, new_widths)] = old
        wide_state[key] = new
    wide.load_state_dict(wide_state)
    return wide


def _conv(block: nn.Module, index: int) -> nn.Conv2d:
    layer = block[index] if isinstance(block, nn.Sequential) else None
    if not isinstance(layer, nn.Conv2d):
        raise ValueError(f"widen: expected a conv at position {index} of {type(block).__name__}")
    return layer


def _old_inputs(
    key: str, n_old: int, n_new: int, old_widths: list[int], new_widths: list[int]
) -> torch.Tensor:
    """Where a conv's old input channels sit among its widened inputs.

    A decoder block's first conv reads ``cat([upsampled, skip])``: the skip's channels move
    up by the upsampled map's new channels. Every other conv reads one map whose old
    channels stay first.
    """
    parts = key.split(".")
    if parts[:2] == ["core", "decoder"] and parts[3] == "0":
        skip_level = len(old_widths) - 2 - int(parts[2])
        up_old = n_old - old_widths[skip_level]
        up_new = n_new - new_widths[skip_level]
        return torch.cat([torch.arange(up_old), up_new + torch.arange(old_widths[skip_level])])
    return torch.arange(n_old)


class CompactUNet(nn.Module):
    """Pixel-unshuffle → U-Net at reduced resolution → pixel-shuffle.

    Parameters
    ----------
    unshuffle
        Down-folding factor of the front end (4: a 1024² frame becomes 16 × 256²).
    scales
        Down-sampling steps of the inner U-Net.
    base_channels, max_channels
        Inner U-Net widths ``b, 2b, 4b, ...`` capped at ``max_channels``.
    norm
        ``"none"`` (default: bias-free, no batch statistics), ``"bias_free"`` or ``"batch"``.
    bias
        Conv biases (only with ``norm="none"``); False keeps the network homogeneous.
    """

    def __init__(
        self,
        unshuffle: int = 4,
        scales: int = 4,
        base_channels: int = 32,
        max_channels: int = 128,
        norm: str = "none",
        bias: bool = False,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.scales = scales
        folded = in_channels * unshuffle**2
        self.fold = nn.PixelUnshuffle(unshuffle)
        self.core = UNetCore(folded, folded, compact_widths(scales, base_channels, max_channels), norm, bias)
        self.unfold = nn.PixelShuffle(unshuffle)
        self.inference_path = False

    def enable_inference_path(self) -> None:
        """Use the inference forward (:meth:`forward_inference`) from now on; eval only.

        Called by :func:`lowdose.models.layers.prepare_for_inference` on its copy.
        """
        self.inference_path = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (batch, channels, height, width); any height/width."""
        if self.inference_path and not self.training:
            return self.forward_inference(x)
        padded, size = pad_to_multiple(x, self.unshuffle * 2**self.scales)
        out: torch.Tensor = self.unfold(self.core(self.fold(padded)))
        return crop_to(out, size)

    def forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as :meth:`forward` with fewer passes over memory (CPU inference).

        Feature maps stay in padded form (a one-pixel replicate ring, channels_last) from
        the fold to the head, so no conv needs a padded copy of its input; the fold and the
        1×1 head + unfold are single permuting copies, max-pooling four strided maxima, the
        skip concatenation one copy into a padded map. The convs are whatever the core holds
        (``InferenceConv2d`` after ``prepare_for_inference``; others run unpadded).
        """
        if x.shape[0] > 1 and x.device.type == "cpu" and x.shape[-2] * x.shape[-1] >= _SPLIT_MIN_PIXELS:
            # One frame at a time: a frame's level-0 maps (≈ 4 MB each at 1024²) stay in
            # cache, which a batch's do not (see _SPLIT_MIN_PIXELS for the measurements).
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
            for i in range(x.shape[0]):
                out[i : i + 1] = self.forward_inference(x[i : i + 1])
            return out
        padded, size = pad_to_multiple(x, self.unshuffle * 2**self.scales)
        h = pixel_unshuffle_padded(padded, self.unshuffle)
        core = self.core
        skips = []
        for level, block in enumerate(core.encoder):
            if level > 0:
                h = max_pool_2x2_padded(h)
            h = block_padded(block, h)
            skips.append(h)
        skips.pop()
        for block in core.decoder:
            skip = skips.pop()
            height, width = skip.shape[-2] - 2, skip.shape[-1] - 2
            channels = h.shape[1]
            first = block[0] if isinstance(block, nn.Sequential) and len(block) else None
            doubles = 2 * (h.shape[-2] - 2) == height and 2 * (h.shape[-1] - 2) == width
            if doubles:
                # Bilinear ×2 (half-pixel centres) of the replicate-padded map: its centre
                # (cropped by one) is the padded form of the upsampled interior, edge clamping
                # being replication (equal up to rounding); it reads a contiguous map.
                up = F.interpolate(h, size=(height + 4, width + 4), mode="bilinear", align_corners=False)
            if doubles and isinstance(first, InferenceConv2d) and first.border_fix:
                h = block_padded(block, first.forward_joined_padded(up, skip), start=1)
                continue
            joined = empty_padded(skip, channels + skip.shape[1], height, width)
            if doubles:
                joined[:, :channels].copy_(interior(up))
            else:
                up = F.interpolate(interior(h), size=(height, width), mode="bilinear", align_corners=False)
                interior(joined[:, :channels]).copy_(up)
                replicate_ring_(joined[:, :channels])
            joined[:, channels:].copy_(skip)  # ring included: it is already replicate
            h = block_padded(block, joined)
        return crop_to(head_pixel_shuffle_padded(h, core.head, self.unshuffle), size)
