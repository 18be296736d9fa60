"""What an experiment evaluates on: options, images of a split, noisy/clean pairs, crops, ground truth.

Shared by ``table1``, ``surface`` and ``likelihood``. The images come from a
SimulationSet split by structure (:func:`lowdose.training.data.resolve_splits`);
by default the split of the evaluated model's own training run (its card records
the selection, fractions and seed), so the ``test`` split is the model's held-out
data. Noise is drawn per (image, realisation) from a fixed seed with the same
stream as :func:`lowdose.training.evaluate.noisy_pairs`, so numbers are
reproducible and match the model card's evaluation. No dask or torch here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from lowdose.errors import LowdoseInputError
from lowdose.evaluation._options import parse_options

SPLITS = ("train", "validation", "test", "all")
"""Values of the ``split`` option."""

COMMON_DEFAULTS: dict[str, Any] = {
    "split": "test",
    "selection": None,
    "split_fractions": None,
    "split_seed": None,
    "n_images": None,
    "images": None,
    "realisations": 1,
    "seed": 0,
    "dose_e_per_px": None,
    "crop": None,
}
"""Options every experiment of this package takes (``None``: see :func:`resolve_images`)."""


def experiment_options(
    experiment: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``COMMON_DEFAULTS`` and ``defaults`` updated with ``options``, typed and range-checked.

    Typing is :func:`lowdose.evaluation._options.parse_options` (the one option parser of
    every experiment); unknown keys are an error.
    """
    resolved = parse_options(
        experiment,
        options,
        {**COMMON_DEFAULTS, **defaults},
        integers=("realisations", "seed", "n_images", "crop", "split_seed"),
    )
    if resolved["realisations"] < 1:
        raise LowdoseInputError(f"lowdose evaluate {experiment} --option realisations: expected >= 1")
    if resolved["crop"] is not None and resolved["crop"] < 16:
        raise LowdoseInputError(f"lowdose evaluate {experiment} --option crop: expected >= 16 pixels")
    if resolved["n_images"] is not None and resolved["n_images"] < 1:
        raise LowdoseInputError(f"lowdose evaluate {experiment} --option n_images: expected >= 1")
    if resolved["split"] not in SPLITS:
        raise LowdoseInputError(
            f"lowdose evaluate {experiment} --option split: expected one of {SPLITS}, "
            f"got {resolved['split']!r}"
        )
    return resolved


def model_source(model: str | None) -> str:
    """A model name or path that resolves the same on any worker ("default" or an absolute path)."""
    if model is None or str(model) == "default":
        return "default"
    path = Path(model)
    if not path.exists():
        raise LowdoseInputError(
            f"--model {model}: no such model (expected 'default' or an artefact directory)"
        )
    return str(path.resolve())


def model_card(source: str) -> dict[str, Any]:
    """The model card of an artefact (``"default"`` or a directory / ``.safetensors`` path)."""
    from lowdose.models.artefact import DEFAULT_DIR, read_card

    directory = DEFAULT_DIR if source == "default" else Path(source)
    if directory.suffix == ".safetensors":
        directory = directory.parent
    return read_card(directory)


@dataclass(frozen=True)
class ImageSet:
    """Images of one split of a SimulationSet, with what is needed to noise and score them."""

    store: Path
    images: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    pixel_size_A: float
    dose_e_per_px: float
    dose_scale: float
    split: str
    split_source: str
    selection: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for a report."""
        return (
            f"`{self.store.name}`, split `{self.split}` ({len(self.images)} images; {self.split_source}), "
            f"{self.dose_e_per_px:g} e/px, {self.pixel_size_A:.4f} Å/px"
        )


def resolve_images(data: Path, options: Mapping[str, Any], card: Mapping[str, Any] | None) -> ImageSet:
    """Pick the images to evaluate from ``options`` (see :data:`COMMON_DEFAULTS`).

    Unless ``selection``, ``split_fractions`` or ``split_seed`` are given, they come from
    the model card's training config when its ``data`` has the same file name as
    ``data`` (so ``split=test`` is the model's held-out split), else ``{}``,
    ``(0.8, 0.1, 0.1)`` and ``0``. ``images`` (a list of global indices, all in the
    split) picks images of the split; ``n_images`` keeps the first ones.
    """
    from lowdose.training.data import resolve_splits

    data = Path(data)
    training = dict(((card or {}).get("training") or {}).get("config") or {})
    same_data = bool(training) and Path(str(training.get("data", ""))).name == data.name
    from_card = same_data and all(
        options.get(k) is None for k in ("selection", "split_fractions", "split_seed")
    )
    selection = options.get("selection")
    if selection is None:
        selection = training.get("selection", {}) if from_card else {}
    if not isinstance(selection, dict):
        raise LowdoseInputError(f"--option selection: expected a mapping, got {selection!r}")
    fractions = options.get("split_fractions")
    if fractions is None:
        fractions = training.get("split_fractions", (0.8, 0.1, 0.1)) if from_card else (0.8, 0.1, 0.1)
    if isinstance(fractions, str):
        fractions = [s for s in fractions.replace(" ", "").split(",") if s]
    try:
        fractions_t = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise LowdoseInputError(
            f"--option split_fractions: expected three numbers, got {fractions!r}"
        ) from None
    if len(fractions_t) != 3:
        raise LowdoseInputError(f"--option split_fractions: expected three numbers, got {fractions!r}")
    split_seed = options.get("split_seed")
    if split_seed is None:
        split_seed = int(training.get("split_seed", 0)) if from_card else 0
    splits = resolve_splits(data, selection, fractions_t, int(split_seed))
    split = str(options.get("split", "test"))
    chosen = {
        "train": splits.train,
        "validation": splits.validation,
        "test": splits.test,
        "all": np.sort(np.concatenate([splits.train, splits.validation, splits.test])),
    }[split]
    wanted = options.get("images")
    if wanted is not None:
        wanted_list = [int(i) for i in (wanted if isinstance(wanted, list | tuple) else [wanted])]
        outside = sorted(set(wanted_list) - {int(i) for i in chosen})
        if outside:
            raise LowdoseInputError(
                f"--option images: image(s) {outside[:5]} are not in the {split} split of {data}"
            )
        chosen = np.asarray(wanted_list, dtype=np.int64)
    if options.get("n_images") is not None:
        chosen = chosen[: int(options["n_images"])]
    if len(chosen) == 0:
        raise LowdoseInputError(
            f"{data}: the {split} split is empty (selection {selection}, fractions {fractions_t}, "
            f"seed {split_seed}); choose --option split=... or another selection"
        )
    dose = options.get("dose_e_per_px")
    dose = splits.store_dose_e_per_px if dose is None else float(dose)
    if not dose > 0:
        raise LowdoseInputError(f"--option dose_e_per_px: expected a positive dose, got {dose}")
    source = (
        "the structure split recorded in the model's card (test = structures it never saw)"
        if from_card
        else f"structure split {list(fractions_t)}, seed {split_seed}, selection {json.dumps(selection)}"
    )
    return ImageSet(
        store=data,
        images=np.asarray(chosen, dtype=np.int64),
        validation=np.asarray(splits.validation, dtype=np.int64),
        pixel_size_A=splits.pixel_size_A,
        dose_e_per_px=float(dose),
        dose_scale=float(dose) / splits.store_dose_e_per_px,
        split=split,
        split_source=source,
        selection=dict(selection),
    )


def noisy_clean(
    store: str | Path, image: int, realisation: int, dose_scale: float, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(noisy, clean)`` of one image and noise realisation (the stream of ``noisy_pairs``)."""
    from lowdose.physics.noise import poisson_noise
    from lowdose.training.evaluate import EVALUATION_STREAM
    from lowdose.training.sampler import open_clean_array

    array = open_clean_array(store)
    clean = np.maximum(np.asarray(array[int(image)], dtype=np.float32) * np.float32(dose_scale), 0.0)
    rng = np.random.default_rng([int(seed), EVALUATION_STREAM, int(image), int(realisation)])
    return poisson_noise(clean, rng).astype(np.float32), clean


def ground_truth_by_image(store: str | Path, images: npt.ArrayLike) -> dict[int, pd.DataFrame]:
    """The ground-truth columns of each image (empty tables when the store has none)."""
    from lowdose.store.simulation_set import read_ground_truth

    table = read_ground_truth(store)
    wanted = {int(i) for i in np.asarray(images).ravel()}
    table = table[table["image"].isin(wanted)]
    groups = {int(k): g.reset_index(drop=True) for k, g in table.groupby("image")}
    return {i: groups.get(i, table.iloc[:0]) for i in sorted(wanted)}


def crop_box(
    shape: tuple[int, int], size_px: int | None, ground_truth: pd.DataFrame | None = None
) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a square crop of side ``size_px`` (None: the whole image).

    The crop is centred on the particle (the middle of the ground-truth Pt columns, or of
    all columns when no element is Pt), else on the image, and shifted to stay inside.

    Examples
    --------
    >>> crop_box((100, 120), 40)
    (30, 70, 40, 80)
    >>> crop_box((100, 120), None)
    (0, 100, 0, 120)
    """
    height, width = int(shape[0]), int(shape[1])
    if size_px is None:
        return 0, height, 0, width
    if ground_truth is not None and len(ground_truth):
        truth = ground_truth
        if "element" in truth.columns and (truth["element"].astype(str) == "Pt").any():
            truth = truth[truth["element"].astype(str) == "Pt"]
        cy = 0.5 * (float(truth["y_px"].min()) + float(truth["y_px"].max()))
        cx = 0.5 * (float(truth["x_px"].min()) + float(truth["x_px"].max()))
    else:
        cy, cx = height / 2.0, width / 2.0
    side_y, side_x = min(size_px, height), min(size_px, width)
    y0 = int(np.clip(round(cy - side_y / 2.0), 0, height - side_y))
    x0 = int(np.clip(round(cx - side_x / 2.0), 0, width - side_x))
    return y0, y0 + side_y, x0, x0 + side_x


def crop_truth(ground_truth: pd.DataFrame, box: tuple[int, int, int, int]) -> pd.DataFrame:
    """Ground-truth columns inside ``box``, in the crop's pixel coordinates."""
    y0, y1, x0, x1 = box
    inside = (
        (ground_truth["y_px"] >= y0)
        & (ground_truth["y_px"] < y1)
        & (ground_truth["x_px"] >= x0)
        & (ground_truth["x_px"] < x1)
    )
    out = ground_truth[inside].copy()
    out["y_px"] = out["y_px"] - y0
    out["x_px"] = out["x_px"] - x0
    return out.reset_index(drop=True)
