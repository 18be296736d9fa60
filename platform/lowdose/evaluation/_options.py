"""Typed access to an experiment's ``--option key=value`` knobs, with clear errors.

The CLI hands options over as strings (or already-typed values from Python);
:func:`parse_options` checks the keys against the experiment's defaults and
converts every value to the type of its default. No heavy imports here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lowdose.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(experiment: str, key: str, value: Any, default: Any, integers: frozenset[str]) -> Any:
    where = f"lowdose evaluate {experiment} --option {key}"
    if value is None:
        return None
    if default is None and key not in integers:
        return value  # typed later by the experiment (JSON, lists, ...)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if isinstance(default, int) or key in integers:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(default, tuple):
        items = value if isinstance(value, list | tuple) else [s for s in str(value).split(",") if s.strip()]
        return tuple(str(item).strip() for item in items)
    return str(value)


def parse_options(
    experiment: str,
    options: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    integers: tuple[str, ...] = ("image",),
) -> dict[str, Any]:
    """``defaults`` updated with ``options``, each value converted to its default's type.

    A tuple default takes a comma-separated string; the keys in ``integers`` take an
    integer even when their default is ``None``; any other ``None`` default passes the
    value through unchanged (the experiment types it).

    Raises
    ------
    ConfigError
        An unknown key (the message lists the known ones) or a value of the wrong type.

    Examples
    --------
    >>> parse_options("filters", {"window_px": "96"}, {"window_px": 160, "seed": 0})
    {'window_px': 96, 'seed': 0}
    """
    resolved = dict(defaults)
    for key, value in (options or {}).items():
        if key not in defaults:
            raise ConfigError(
                f"lowdose evaluate {experiment} --option {key}: unknown option; "
                f"expected one of {sorted(defaults)}"
            )
        resolved[key] = _convert(experiment, key, value, defaults[key], frozenset(integers))
    return resolved
