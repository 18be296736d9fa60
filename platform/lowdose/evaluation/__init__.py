"""Experiments that reproduce and extend the paper (tables, figures, contact sheets).

Each experiment is a module ``lowdose.evaluation.<name>`` with one entry point::

    run(data, out, *, model, client, options, progress) -> Path

that writes ``<out>/<name>.md``, ``<out>/<name>.csv`` and PNG figures into the report
folder ``out``, reuses work already done when re-run, and returns the Markdown path.
:func:`run_experiment` dispatches by name (``lowdose evaluate EXPERIMENT``).
Experiment modules import dask and torch lazily, inside functions.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowdose.errors import LowdoseInputError

if TYPE_CHECKING:
    import distributed

EXPERIMENTS = ("table1", "surface", "likelihood", "generalization", "filters")
"""Names accepted by ``lowdose evaluate``."""


def experiment_module(name: str) -> Any:
    """The module of experiment ``name``; a clear error when it is unknown or cannot be imported."""
    if name not in EXPERIMENTS:
        raise LowdoseInputError(
            f"lowdose evaluate: unknown experiment {name!r}; expected one of {list(EXPERIMENTS)}"
        )
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError as err:
        raise LowdoseInputError(
            f"lowdose evaluate {name}: the experiment cannot be imported ({err}); "
            "is lowdose installed with its extras (pip install -e '.[dev]')?"
        ) from None
    for function in ("run", "check_options"):
        if not callable(getattr(module, function, None)):
            raise LowdoseInputError(
                f"lowdose evaluate {name}: module {module.__name__} has no {function}() function"
            )
    return module


def check_inputs(
    name: str, data: Path, *, model: str | None = None, options: dict[str, Any] | None = None
) -> None:
    """Check an experiment's inputs without computing anything (the CLI does it before starting a cluster).

    The experiment name, its ``--option`` keys, types and ranges, the model artefact
    and that ``data`` is a readable SimulationSet.

    Raises
    ------
    LowdoseInputError
        The first problem found, naming the flag or file.
    """
    from lowdose.evaluation.inputs import model_card, model_source
    from lowdose.store.simulation_set import open_simulation_set

    experiment_module(name).check_options(dict(options or {}))
    model_card(model_source(model))
    open_simulation_set(Path(data))


def run_experiment(
    name: str,
    data: Path,
    out: Path,
    *,
    model: str | None = None,
    client: distributed.Client | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Run (or resume) experiment ``name`` on SimulationSet ``data`` into report folder ``out``.

    Parameters
    ----------
    name
        One of :data:`EXPERIMENTS`.
    data
        The SimulationSet (``.zarr``).
    out
        Report folder (created).
    model
        Model artefact name or path; ``None`` is the shipped default model.
    client
        A Dask client to spread the per-image tasks over; ``None`` runs them here.
    options
        Experiment-specific knobs (``--option key=value``).
    progress
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The report's Markdown file.
    """
    module = experiment_module(name)
    result: Path = module.run(
        Path(data), Path(out), model=model, client=client, options=dict(options or {}), progress=progress
    )
    return result
