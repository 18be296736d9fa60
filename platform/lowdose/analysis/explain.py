"""Effective (Jacobian) filters of a denoising network (Vincent et al. 2021, Fig. 8).

A ReLU network is piecewise linear in its input, so near a given input the output at
pixel ``(y, x)`` is ``Σ_ij a_ij · input_ij`` (+ a bias term that vanishes for bias-free
networks, Mohan et al. 2020). The weights ``a`` — the gradient of that output pixel with
respect to the whole input image, computed by autograd — are the network's *effective
filter* at that pixel: flat and small in vacuum, periodic in the bulk, concentrated at
the surface.

torch and numpy only: never import dask here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lowdose.errors import LowdoseInputError


def effective_filter(model: Any, image: npt.ArrayLike, y: int, x: int) -> npt.NDArray[np.float64]:
    """Gradient of output pixel ``(y, x)`` with respect to the whole input image.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` mapping a ``(1, 1, H, W)`` tensor to ``(1, 1, H, W)``. It is
        put in ``eval()`` mode (batch-norm uses its running statistics) for the call and
        its previous training flag is restored afterwards.
    image
        The 2-D input (counts), ``H × W``.
    y, x
        The output pixel.

    Returns
    -------
    numpy.ndarray
        ``H × W`` float64 filter; for a bias-free network
        ``model(image)[y, x] == (filter * image).sum()``.
    """
    import torch

    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise LowdoseInputError(f"image: expected a 2-D image, got shape {arr.shape}")
    if not (0 <= y < arr.shape[0] and 0 <= x < arr.shape[1]):
        raise LowdoseInputError(f"(y, x): pixel ({y}, {x}) outside the image of shape {arr.shape}")
    try:
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    was_training = bool(model.training)
    model.eval()
    try:
        inp = torch.tensor(arr, device=device, dtype=dtype)[None, None].requires_grad_(True)
        out = model(inp)
        if out.shape[-2:] != inp.shape[-2:]:
            raise LowdoseInputError(
                f"model: output shape {tuple(out.shape)} does not match input {tuple(inp.shape)}"
            )
        (grad,) = torch.autograd.grad(out[0, 0, y, x], inp)
    finally:
        model.train(was_training)
    return np.asarray(grad[0, 0].detach().cpu().double().numpy())
