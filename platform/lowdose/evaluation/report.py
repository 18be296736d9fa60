"""Report writing for the experiments: Markdown tables, mean ± std cells, atomic file writes.

pandas/numpy only (matplotlib is imported by the experiments that draw); no dask, no torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd


def pm(mean: float, std: float, digits: int = 2) -> str:
    """``"mean ± std"`` to ``digits`` decimals, or ``"–"`` when the mean is not finite.

    Examples
    --------
    >>> pm(31.0, 1.0)
    '31.00 ± 1.00'
    >>> pm(float("nan"), 0.0)
    '–'
    """
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame`` (values as ``str``; floats to 4 significant digits).

    Examples
    --------
    >>> print(markdown_table(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})))
    | a | b |
    |---|---|
    | 1 | x |
    | 2 | y |
    """
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as CSV (no index) atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path


def command_line(experiment: str, data: Path, out: Path, model: str | None, options: dict[str, Any]) -> str:
    """The ``lowdose evaluate`` command that reproduces a report (for its Markdown).

    Examples
    --------
    >>> command_line("table1", Path("s.zarr"), Path("r"), None, {"crop": 256, "images": [1, 2]})
    "lowdose evaluate table1 --data s.zarr --out r --option crop=256 --option 'images=[1, 2]'"
    """
    import shlex

    import yaml

    parts = ["lowdose evaluate", experiment, "--data", shlex.quote(str(data)), "--out", shlex.quote(str(out))]
    if model not in (None, "default"):
        parts += ["--model", shlex.quote(str(model))]
    for key, value in options.items():
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("\n...").strip()
        parts += ["--option", shlex.quote(f"{key}={text}")]
    return " ".join(parts)
