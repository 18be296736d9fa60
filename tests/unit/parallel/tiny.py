"""Tiny stand-ins shared by the parallel tests: a small real conv net and a small FrameSeries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class TinyConv(torch.nn.Module):
    """A real (tiny) fully convolutional denoiser: receptive field 2 * n_layers + 1 px."""

    def __init__(self, n_layers: int = 3, width: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        c_in = 1
        for i in range(n_layers):
            c_out = 1 if i == n_layers - 1 else width
            layers.append(torch.nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate"))
            if i < n_layers - 1:
                layers.append(torch.nn.ReLU())
            c_in = c_out
        self.net = torch.nn.Sequential(*layers)
        self.receptive_field_px = 2 * n_layers + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_handle(model: TinyConv):
    from lowdose.parallel.denoise import ModelHandle, _state_sha256

    return ModelHandle(
        source="",
        sha256=_state_sha256(model),
        model_id="TinyConv",
        halo_px=(model.receptive_field_px + 1) // 2,
        module=model,
    )


def write_series(
    path: Path,
    n_frames: int = 12,
    shape: tuple[int, int] = (64, 64),
    chunk_frames: int = 4,
    seed: int = 0,
    with_truth: bool = False,
) -> Path:
    """A FrameSeries (lowdose.store.series) of Poisson counts around a few bright blobs.

    With ``with_truth`` the blob centres are written as the ground-truth column table.
    """
    import pandas as pd

    from lowdose.store.schema import ground_truth_path
    from lowdose.store.series import append_frames, create_frame_series

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = np.full((n_frames, *shape), 0.45, dtype=np.float32)
    truth = []
    for f in range(n_frames):
        for i, (cy, cx) in enumerate(rng.uniform(8, min(shape) - 8, size=(4, 2))):
            clean[f] += 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
            truth.append((f, cx, cy, "Pt", 5, i == 0))
    counts = rng.poisson(clean).astype(np.uint8)
    create_frame_series(path, shape, chunk_frames=chunk_frames, with_clean=True)
    append_frames(path, counts, clean)
    if with_truth:
        table = pd.DataFrame(truth, columns=["frame", "x_px", "y_px", "element", "n_atoms", "surface"])
        table.to_parquet(ground_truth_path(path), index=False)
    return path


def toy_analyze_frame(raw_counts, denoised, *, pixel_size_A, frame=0, config=None, ground_truth=None):
    """A stand-in per-frame kernel with analyze_frame's signature: local maxima above 1.0."""
    import pandas as pd
    from scipy import ndimage

    peaks = (denoised == ndimage.maximum_filter(denoised, size=5)) & (denoised > 1.0)
    ys, xs = np.nonzero(peaks)
    columns = pd.DataFrame(
        {
            "frame": frame,
            "x_px": xs.astype(float),
            "y_px": ys.astype(float),
            "sigma_px": 2.0,
            "intensity": denoised[ys, xs].astype(float),
            "llr": (denoised[ys, xs] - 1.0).astype(float),
            "verdict": np.where(denoised[ys, xs] > 1.5, "real", "undecided"),
            "surface": xs < denoised.shape[1] // 2,
        }
    )
    row = {
        "frame": frame,
        "n_columns": len(columns),
        "mean_llr": float(columns["llr"].mean()) if len(columns) else float("nan"),
    }
    if ground_truth is not None:
        row["n_truth"] = len(ground_truth)
    return columns, row
