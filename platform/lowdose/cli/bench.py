"""``lowdose bench``: measure each stage against same-run bounds and write JSON."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command."""

    @app.command("bench")
    def bench(
        stages: list[str] = typer.Argument(
            None, help="simulate ingest train denoise pipeline memory (default: all)."
        ),
        out: Path = typer.Option(Path("bench.json"), "--out", help="JSON results file."),
        quick: bool = typer.Option(False, "--quick", help="Tiny sizes (seconds; what the test suite runs)."),
        markdown: Path | None = typer.Option(
            None, "--markdown", help="Also write the targets table (README format) to this file."
        ),
    ) -> None:
        """Measure stages against same-run references; print a table per stage and write JSON."""
        from lowdose.bench import markdown_table, run_bench

        report = run_bench(list(stages or []), out, quick=quick, echo=typer.echo)
        table = markdown_table(report)
        typer.echo(table)
        if markdown is not None:
            markdown.write_text(table)
            typer.echo(f"wrote {markdown}")
        typer.echo(f"wrote {out}")
