"""Building blocks shared by the lowdose denoisers: bias-free batch norm, conv blocks, padding.

"Bias-free" follows Mohan et al. (ICLR 2020): no additive constant anywhere, so a
network made of these layers in eval mode is positively homogeneous,
``f(a x) = a f(x)`` for ``a > 0`` — on counting data that means the same network
serves every dose. This module imports torch only (never dask, numpy-free).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class BiasFreeBatchNorm2d(nn.Module):
    """Batch norm without mean subtraction and without an additive term.

    Training: ``y = gamma * x / sqrt(mean(x**2) + eps)`` with the second moment
    taken over (batch, y, x); a running second moment is kept for eval, where
    ``y = gamma * x / sqrt(running_sq + eps)`` is linear in ``x``.

    A ``bias`` parameter is registered but frozen at zero and never used: the
    published network (a ``BatchNorm2d`` subclass in the authors' code) carries it,
    which is why its parameter count is 70,504,960; keeping it lets that count and
    state dicts match.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features), requires_grad=False)
        self.running_sq: torch.Tensor
        self.register_buffer("running_sq", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel by its (batch or running) root-mean-square."""
        if self.training:
            second_moment = x.pow(2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_sq.mul_(1.0 - self.momentum).add_(self.momentum * second_moment.detach())
        else:
            second_moment = self.running_sq
        scale = self.weight / torch.sqrt(second_moment + self.eps)
        return x * scale.view(1, -1, 1, 1)


def norm_layer(channels: int, norm: str) -> nn.Module:
    """Return the normalisation named ``norm`` ("bias_free", "batch" or "none")."""
    if norm == "bias_free":
        return BiasFreeBatchNorm2d(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected 'bias_free', 'batch' or 'none'")


def conv3x3(in_channels: int, out_channels: int, bias: bool) -> nn.Conv2d:
    """3×3 convolution with replication padding (no zero borders to learn around)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="replicate", bias=bias)


class ConvBlock(nn.Sequential):
    """conv3×3 – norm – ReLU – conv3×3 – norm – ReLU.

    Convolutions carry a bias only when there is no normalisation and the block
    is not bias-free (a norm layer makes a conv bias redundant).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, norm: str, bias: bool) -> None:
        conv_bias = bias and norm == "none"
        super().__init__(
            conv3x3(in_channels, mid_channels, conv_bias),
            norm_layer(mid_channels, norm),
            nn.ReLU(inplace=True),
            conv3x3(mid_channels, out_channels, conv_bias),
            norm_layer(out_channels, norm),
            nn.ReLU(inplace=True),
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad the last two dims of ``x`` up to a multiple; return the original (h, w).

    Reflection keeps the padded strip statistically like the frame (noise mirrored
    is still noise). Replicating the last noisy row or column instead paints
    stripes the networks never see in training: on the held-out test images the
    shipped model scored 1.4 dB lower with replication padding.
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    # Reflection needs pad < size: pad in passes (a long pad mirrors repeatedly);
    # a one-pixel dimension can only be repeated.
    while pad_h or pad_w:
        step_h = min(pad_h, x.shape[-2] - 1)
        step_w = min(pad_w, x.shape[-1] - 1)
        if step_h == 0 and step_w == 0:
            x = x.expand(*x.shape[:-2], x.shape[-2] + pad_h, x.shape[-1] + pad_w)
            break
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h -= step_h
        pad_w -= step_w
    return x, (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two dims of ``x`` back to ``size``."""
    return x[..., : size[0], : size[1]]


# --------------------------------------------------------------------------- inference preparation
#
# Everything below is for inference only: it rewrites a trained network into one that
# computes the same function (up to float rounding) with fewer passes over memory. The
# weights on disk are never changed; ``prepare_for_inference`` works on a copy.

_BORDER_FIX_MIN_PIXELS = 96 * 96
"""Feature maps at least this large get zero-padded convs with the replicate border fixed
up afterwards (no padded copy of the map); smaller ones are padded first (fewer small ops)."""


def _fused_relu_conv_available() -> bool:
    """Whether oneDNN's conv-with-ReLU kernel runs here (a private op; checked, never assumed)."""
    try:
        x = torch.ones(1, 1, 3, 3)
        w = -torch.ones(1, 1, 1, 1)
        with torch.inference_mode():
            y = torch.ops.mkldnn._convolution_pointwise(x, w, None, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
        return bool(torch.equal(y, torch.zeros_like(y)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


_FUSED_RELU: bool | None = None


def _fused_relu() -> bool:
    global _FUSED_RELU
    if _FUSED_RELU is None:
        _FUSED_RELU = _fused_relu_conv_available()
    return _FUSED_RELU


def fold_norm(conv: nn.Conv2d, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Weight and bias of ``norm(conv(x))`` as a single conv, for eval mode; None if not foldable.

    ``BiasFreeBatchNorm2d`` scales each channel by ``weight / sqrt(running_sq + eps)``;
    ``BatchNorm2d`` (with running statistics) is ``(y - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)``. Both are per-output-channel affine maps of the
    conv's output, so they fold into its weight (and bias) exactly up to rounding.
    """
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if isinstance(norm, nn.Identity):
        return weight, bias
    if isinstance(norm, BiasFreeBatchNorm2d):
        scale = norm.weight.detach() / torch.sqrt(norm.running_sq + norm.eps)
        return weight * scale.view(-1, 1, 1, 1), None if bias is None else bias * scale
    if isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None and norm.running_var is not None:
        gamma = norm.weight.detach() if norm.weight is not None else torch.ones_like(norm.running_var)
        beta = norm.bias.detach() if norm.bias is not None else torch.zeros_like(norm.running_var)
        scale = gamma / torch.sqrt(norm.running_var + norm.eps)
        shift = beta - norm.running_mean * scale
        if bias is not None:
            shift = shift + bias * scale
        return weight * scale.view(-1, 1, 1, 1), shift
    return None


class InferenceConv2d(nn.Module):
    """conv → (folded norm) → (ReLU) in one module, for inference; same output as the three.

    Replicate padding is done without padding the whole map where that pays: the conv
    runs with zero padding (oneDNN pads on the fly) and the one-pixel output border,
    the only place zero and replicate padding differ, is recomputed from thin strips.
    ReLU runs inside oneDNN's conv when that kernel is available (else in place after).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.clone(), requires_grad=False)
        self.stride = tuple(conv.stride)
        self.dilation = tuple(conv.dilation)
        self.groups = conv.groups
        self.relu = relu
        padding = conv.padding
        if isinstance(padding, str):
            raise ValueError(f"InferenceConv2d: string padding {padding!r} is not supported")
        self.padding = (int(padding[0]), int(padding[1]))
        self.padding_mode = conv.padding_mode
        self._split_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # The border fix-up below is exact for the 3×3, stride-1, pad-1 replicate conv only.
        self.border_fix = (
            self.padding_mode == "replicate"
            and tuple(weight.shape[-2:]) == (3, 3)
            and self.padding == (1, 1)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
        )

    def _conv(self, x: torch.Tensor, padding: tuple[int, int], relu: bool) -> torch.Tensor:
        if relu and _fused_relu() and x.device.type == "cpu" and x.dtype == torch.float32:
            out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
                x,
                self.weight,
                self.bias,
                list(padding),
                list(self.stride),
                list(self.dilation),
                self.groups,
                "relu",
                [],
                "",
            )
            return out
        out = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return out.relu_() if relu else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as ``relu(norm(conv(x)))`` of the layers this was made from."""
        if self.padding_mode == "zeros" or self.padding == (0, 0):
            return self._conv(x, self.padding, self.relu)
        height, width = x.shape[-2:]
        if not self.border_fix or height * width < _BORDER_FIX_MIN_PIXELS or height < 2 or width < 2:
            pad = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
            return self._conv(F.pad(x, pad, mode=self.padding_mode), (0, 0), self.relu)
        out = self._conv(x, (1, 1), self.relu)
        # Output row 0 sees input rows (-1, 0, 1) = (0, 0, 1) under replicate padding, row
        # H-1 sees (H-2, H-1, H-1): gather both 3-row strips (replicate-padded in x) into one
        # 6-row map, convolve it (rows 0 and 3 of the result are the true border rows) and
        # write them back; the same for the columns.
        row_strip, col_strip, row_pad, col_pad, row_ends, col_ends = _border_indices(height, width, x.device)
        cl = torch.channels_last
        rows_in = x.index_select(2, row_strip).index_select(3, col_pad).contiguous(memory_format=cl)
        rows = self._conv(rows_in, (0, 0), self.relu)
        out.index_copy_(2, row_ends, rows[:, :, 0::3])
        cols_in = x.index_select(3, col_strip).index_select(2, row_pad).contiguous(memory_format=cl)
        cols = self._conv(cols_in, (0, 0), self.relu)
        out.index_copy_(3, col_ends, cols[..., 0::3])
        return out

    def forward_padded(self, xp: torch.Tensor) -> torch.Tensor:
        """The same on a map kept in padded form: ``xp`` is the input replicate-padded by one.

        Returns the output in the same form (one-pixel replicate ring around it). The conv
        runs over the padded map with zero padding, so its interior is exactly the
        replicate-padded conv of the input; the ring is then refilled from its neighbours.
        No padded copy of any map is made. Only for :attr:`border_fix` convs.
        """
        out = self._conv(xp, (1, 1), self.relu)
        return replicate_ring_(out)

    def forward_joined_padded(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The conv (+ ReLU) of ``cat([up, skip])`` in padded form, without concatenating.

        ``skip`` is in padded form (``H + 2``); ``up`` is the bilinear ×2 of the padded lower
        level, ``H + 4`` wide, whose centre ``H + 2`` is the padded upsampled map. The conv
        is split by input channels: the skip half with zero padding over ``skip``, the up
        half unpadded over ``up`` (one pixel wider each side, so the two line up), summed
        (and ReLU) inside oneDNN's conv when available. Only for :attr:`border_fix` convs.
        """
        n_up = up.shape[1]
        split = self._split_cache.get(n_up)
        if split is None:
            weight = self.weight.detach()
            split = (
                weight[:, :n_up].contiguous(memory_format=torch.channels_last),
                weight[:, n_up:].contiguous(memory_format=torch.channels_last),
            )
            self._split_cache[n_up] = split
        w_up, w_skip = split
        out = F.conv2d(skip, w_skip, self.bias, 1, 1)
        if _fused_relu() and up.device.type == "cpu" and up.dtype == torch.float32:
            torch.ops.mkldnn._convolution_pointwise_.binary(
                out,
                up,
                w_up,
                None,
                [0, 0],
                [1, 1],
                [1, 1],
                1,
                "add",
                None,
                "relu" if self.relu else None,
                [],
                None,
            )
        else:
            out += F.conv2d(up, w_up)
            if self.relu:
                out.relu_()
        return replicate_ring_(out)


_BORDER_INDEX_CACHE: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}


def _border_indices(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Index tensors of :meth:`InferenceConv2d.forward`'s border fix-up, cached per shape.

    ``(row_strip, col_strip, row_pad, col_pad, row_ends, col_ends)``: the six source rows
    (columns) of the two border strips, all rows (columns) replicate-padded by one, and
    the two output rows (columns) written back.
    """
    key = (height, width, str(device))
    cached = _BORDER_INDEX_CACHE.get(key)
    if cached is None:

        def strip(n: int) -> torch.Tensor:
            return torch.tensor([0, 0, 1, n - 2, n - 1, n - 1], device=device)

        def padded(n: int) -> torch.Tensor:
            return torch.arange(-1, n + 1, device=device).clamp_(0, n - 1)

        def ends(n: int) -> torch.Tensor:
            return torch.tensor([0, n - 1], device=device)

        cached = (strip(height), strip(width), padded(height), padded(width), ends(height), ends(width))
        _BORDER_INDEX_CACHE[key] = cached
    return cached


def fuse_conv_norm_relu(module: nn.Module) -> int:
    """Replace every conv → norm → ReLU run inside ``nn.Sequential`` containers, in place.

    A run is a ``Conv2d`` optionally followed by a foldable norm (``BatchNorm2d`` with
    running statistics, ``BiasFreeBatchNorm2d`` or ``Identity``) and optionally by a
    ``ReLU``; the norm and ReLU become ``Identity``. The module must be in eval mode.
    Returns the number of convs fused.
    """
    if module.training:
        raise ValueError("fuse_conv_norm_relu: the module must be in eval mode (norms use running stats)")
    fused = 0
    for child in list(module.modules()):
        if not isinstance(child, nn.Sequential):
            continue
        layers = list(child)
        i = 0
        while i < len(layers):
            conv = layers[i]
            if type(conv) is not nn.Conv2d:
                i += 1
                continue
            j = i + 1
            norm: nn.Module = nn.Identity()
            if j < len(layers) and isinstance(layers[j], nn.BatchNorm2d | BiasFreeBatchNorm2d | nn.Identity):
                norm = layers[j]
                j += 1
            folded = fold_norm(conv, norm)
            if folded is None:  # a norm that cannot fold: leave this run alone
                i = j
                continue
            relu = j < len(layers) and isinstance(layers[j], nn.ReLU)
            child[i] = InferenceConv2d(folded[0], folded[1], conv, relu)
            for k in range(i + 1, j + int(relu)):
                child[k] = nn.Identity()
            fused += 1
            i = j + int(relu)
    return fused


def prepare_for_inference(
    model: nn.Module, *, channels_last: bool = True, inplace: bool = False
) -> nn.Module:
    """A copy of ``model`` rewritten for fast CPU inference; the same function up to rounding.

    Folds norms into the convs, fuses ReLUs, switches a model's own inference path on
    (``enable_inference_path()``, e.g. :class:`~lowdose.models.compact.CompactUNet`) and
    converts the weights to channels_last. The copy is for inference only (no gradients).
    ``model`` itself is left unchanged unless ``inplace`` (no copy: for a model nobody else
    holds, e.g. one just loaded from an artefact; saves its memory once more).
    """
    prepared = (model if inplace else copy.deepcopy(model)).eval()
    for parameter in prepared.parameters():
        parameter.requires_grad_(False)
    fuse_conv_norm_relu(prepared)
    enable = getattr(prepared, "enable_inference_path", None)
    if callable(enable):
        enable()
    if channels_last:
        prepared.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return prepared


def replicate_ring_(xp: torch.Tensor) -> torch.Tensor:
    """Refill the one-pixel ring of ``xp`` in place by replicating its inner neighbours."""
    xp[:, :, 0].copy_(xp[:, :, 1])
    xp[:, :, -1].copy_(xp[:, :, -2])
    xp[..., 0].copy_(xp[..., 1])
    xp[..., -1].copy_(xp[..., -2])
    return xp


def interior(xp: torch.Tensor) -> torch.Tensor:
    """The map inside the one-pixel ring of a padded-form ``xp`` (a view)."""
    return xp[..., 1:-1, 1:-1]


def empty_padded(like: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """An uninitialised channels_last ``(n, channels, height + 2, width + 2)`` map."""
    return torch.empty(
        (like.shape[0], channels, height + 2, width + 2),
        dtype=like.dtype,
        device=like.device,
        memory_format=torch.channels_last,
    )


def block_padded(block: nn.Module, xp: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Run a ``nn.Sequential`` on a padded-form map, returning padded form.

    ``InferenceConv2d`` layers with :attr:`~InferenceConv2d.border_fix` run padded
    (:meth:`~InferenceConv2d.forward_padded`); ``Identity`` is skipped; anything else
    runs on the interior and is padded again. ``start`` skips the first layers.
    """
    layers = list(block.children()) if isinstance(block, nn.Sequential) else [block]
    for layer in layers[start:]:
        if isinstance(layer, nn.Identity):
            continue
        if isinstance(layer, InferenceConv2d) and layer.border_fix:
            xp = layer.forward_padded(xp)
        else:
            xp = F.pad(layer(interior(xp)), (1, 1, 1, 1), mode="replicate")
    return xp


def max_pool_2x2_padded(xp: torch.Tensor) -> torch.Tensor:
    """``max_pool_2x2`` of a padded-form map's interior, in padded form (even sizes only)."""
    c, hp, wp = xp.shape[1:]
    h, w = hp - 2, wp - 2
    if h % 2 or w % 2:
        return F.pad(F.max_pool2d(interior(xp), 2), (1, 1, 1, 1), mode="replicate")
    out = empty_padded(xp, c, h // 2, w // 2)
    top = torch.maximum(xp[..., 1:-1:2, 1:-1:2], xp[..., 1:-1:2, 2::2])
    bottom = torch.maximum(xp[..., 2::2, 1:-1:2], xp[..., 2::2, 2::2])
    torch.maximum(top, bottom, out=interior(out))
    return replicate_ring_(out)


def pixel_unshuffle_padded(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.pixel_unshuffle(x, factor)`` written straight into a channels_last padded-form map."""
    n, c, h, w = x.shape
    hf, wf = h // factor, w // factor
    out = empty_padded(x, c * factor * factor, hf, wf)
    wide = _WIDE.get(factor)
    if wide is None or x.dtype != torch.float32:
        interior(out).copy_(F.pixel_unshuffle(x, factor))
        return replicate_ring_(out)
    source = x.contiguous().view(wide).reshape(n, c, hf, factor, wf).permute(0, 2, 4, 1, 3)
    target = out.permute(0, 2, 3, 1).view(wide)[:, 1:-1, 1:-1].view(n, hf, wf, c, factor)
    target.copy_(source)
    return replicate_ring_(out)


def head_pixel_shuffle_padded(xp: torch.Tensor, head: nn.Conv2d, factor: int) -> torch.Tensor:
    """``F.pixel_shuffle(head(interior(xp)), factor)`` for a 1×1 ``head``, one matmul and one copy."""
    n, c, hp, wp = xp.shape
    h, w = hp - 2, wp - 2
    if not xp.is_contiguous(memory_format=torch.channels_last) or tuple(head.kernel_size) != (1, 1):
        return F.pixel_shuffle(head(interior(xp)), factor)
    weight = head.weight.reshape(head.out_channels, c)
    rows = xp.permute(0, 2, 3, 1).reshape(n * hp * wp, c)
    y = torch.addmm(head.bias, rows, weight.t()) if head.bias is not None else rows @ weight.t()
    out_c = head.out_channels // (factor * factor)
    wide = _WIDE.get(factor)
    if wide is not None and y.dtype == torch.float32:
        v = y.view(wide).reshape(n, hp, wp, out_c * factor)[:, 1:-1, 1:-1]
        v = v.reshape(n, h, w, out_c, factor).permute(0, 3, 1, 4, 2).contiguous()
        return v.view(torch.float32).reshape(n, out_c, h * factor, w * factor)
    y = y.reshape(n, hp, wp, out_c, factor, factor)[:, 1:-1, 1:-1].permute(0, 3, 1, 4, 2, 5)
    return y.reshape(n, out_c, h * factor, w * factor)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` for even height and width, as four strided maxima (channels_last friendly)."""
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        return F.max_pool2d(x, 2)
    return torch.maximum(
        torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
        torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]),
    )


_WIDE = {2: torch.float64, 4: torch.complex128}
"""A dtype as wide as ``factor`` float32 values: permuting copies then move whole runs."""


def pixel_unshuffle_channels_last(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.pixel_unshuffle(x, factor)`` with the result in channels_last memory (one copy).

    The copy moves each run of ``factor`` adjacent float32 pixels as one wide element
    (viewed as float64/complex128: a bit copy, no arithmetic), several times faster than
    a float-by-float permute.
    """
    n, c, h, w = x.shape
    wide = _WIDE.get(factor)
    if wide is not None and x.dtype == torch.float32:
        v = x.contiguous().view(wide).reshape(n, c, h // factor, factor, w // factor)
        folded = v.permute(0, 2, 4, 1, 3).contiguous().view(torch.float32)
        return folded.reshape(n, h // factor, w // factor, c * factor * factor).permute(0, 3, 1, 2)
    folded = x.reshape(n, c, h // factor, factor, w // factor, factor).permute(0, 2, 4, 1, 3, 5)
    return folded.reshape(n, h // factor, w // factor, c * factor * factor).permute(0, 3, 1, 2)


def head_pixel_shuffle(x: torch.Tensor, head: nn.Conv2d, factor: int) -> torch.Tensor:
    """``F.pixel_shuffle(head(x), factor)`` for a 1×1 ``head``, as a matmul on channels_last ``x``."""
    n, c, h, w = x.shape
    if not x.is_contiguous(memory_format=torch.channels_last) or tuple(head.kernel_size) != (1, 1):
        return F.pixel_shuffle(head(x), factor)
    weight = head.weight.reshape(head.out_channels, c)
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    y = torch.addmm(head.bias, rows, weight.t()) if head.bias is not None else rows @ weight.t()
    out_c = head.out_channels // (factor * factor)
    wide = _WIDE.get(factor)
    if wide is not None and y.dtype == torch.float32:
        v = y.view(wide).reshape(n, h, w, out_c, factor).permute(0, 3, 1, 4, 2).contiguous()
        return v.view(torch.float32).reshape(n, out_c, h * factor, w * factor)
    y = y.reshape(n, h, w, out_c, factor, factor).permute(0, 3, 1, 4, 2, 5)
    return y.reshape(n, out_c, h * factor, w * factor)
