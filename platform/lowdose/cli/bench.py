"""``lowdose bench``: measure each stage on this machine and write JSON."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command."""

    @app.command("bench")
    def bench(
        stages: list[str] = typer.Argument(None, help="denoise ingest pipeline simulate (default: all)."),
        out: Path = typer.Option(Path("bench.json"), "--out", help="JSON results file."),
        quick: bool = typer.Option(False, "--quick", help="Tiny sizes (seconds; what the test suite runs)."),
    ) -> None:
        """Measure stages against same-run references; print a table and write JSON."""
        from lowdose.bench import run_bench

        report = run_bench(list(stages or []), out, quick=quick)
        for stage, figures in report["stages"].items():
            typer.echo(f"{stage}:")
            for key, value in _flatten(figures):
                typer.echo(f"  {key:60s} {value}")
        typer.echo(f"wrote {out}")


def _flatten(figures: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        else:
            rows.append((name, str(value)))
    return rows
