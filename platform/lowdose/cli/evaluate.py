"""``lowdose evaluate EXPERIMENT --data SET --out REPORT``: reproduce the paper's tables and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lowdose.cli._pipeline_options import (
    ClusterOption,
    QuietOption,
    SchedulerOption,
    ThreadsOption,
    WorkersOption,
)
from lowdose.errors import LowdoseInputError


def parse_option(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and read the value as a YAML scalar (``3`` → 3, ``a,b`` → ``"a,b"``).

    Examples
    --------
    >>> parse_option("crop=512")
    ('crop', 512)
    >>> parse_option("dncnn=runs/dncnn/artefact")
    ('dncnn', 'runs/dncnn/artefact')
    """
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise LowdoseInputError(f"--option {text!r}: expected KEY=VALUE")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise LowdoseInputError(f"--option {key}: value {value!r} is not a YAML scalar") from None
    return key, parsed


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command."""

    @app.command("evaluate")
    def evaluate(
        experiment: str = typer.Argument(..., help="table1, surface, likelihood, generalization or filters."),
        data: Path = typer.Option(..., "--data", help="SimulationSet (.zarr) to evaluate on."),
        out: Path = typer.Option(..., "--out", help="Report folder (Markdown, CSV, PNG); re-runs resume."),
        model: str = typer.Option("default", "--model", help="Model artefact name or path."),
        option: list[str] = typer.Option(
            [], "--option", help="Experiment knob KEY=VALUE (repeatable), e.g. crop=512, dncnn=PATH."
        ),
        cluster: str | None = ClusterOption,
        scheduler: str | None = SchedulerOption,
        n_workers: int | None = WorkersOption,
        threads_per_worker: int | None = ThreadsOption,
        quiet: bool = QuietOption,
    ) -> None:
        """Run an evaluation experiment on a Dask cluster; writes EXPERIMENT.md/.csv/.png into OUT."""
        from lowdose.evaluation import check_inputs, run_experiment
        from lowdose.parallel.cluster import connect, resolve_backend_name

        # Everything that can be checked without computing is checked before a cluster starts:
        # the experiment, its --option values, --model, --data and the backend name.
        from lowdose.store.location import check_output_folder

        options = dict(parse_option(text) for text in option)
        check_output_folder(out)
        check_inputs(experiment, data, model=model, options=options)
        resolve_backend_name(cluster or "auto", scheduler)
        markdown: Path | None = None
        try:
            with connect(
                cluster or "auto",
                scheduler=scheduler,
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                quiet=quiet,
            ) as client:
                markdown = run_experiment(
                    experiment, data, out, model=model, client=client, options=options, progress=not quiet
                )
        except TimeoutError:
            # On a saturated machine a LocalCluster's workers can outlive the nanny's kill
            # timeout; the report is complete by then, so that alone is not a failure.
            if markdown is None:
                raise
            typer.echo("lowdose: warning: the Dask cluster did not shut down in time", err=True)
        typer.echo(str(markdown))
