"""Base class and YAML round-trip for lowdose configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lowdose.errors import ConfigError

CONFIG_VERSION = 1
"""Schema version written into every config; bumped on incompatible changes."""

ConfigT = TypeVar("ConfigT", bound="LowdoseConfig")


class LowdoseConfig(BaseModel):
    """Strict base for every lowdose YAML config.

    Unknown keys are errors, values are validated on assignment too, and every
    config carries the schema ``version`` it was written for.
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        use_enum_values=False,
        frozen=False,
    )

    version: int = Field(default=CONFIG_VERSION, description="Config schema version.")

    def to_yaml(self) -> str:
        """Serialise to YAML text (JSON-compatible values only)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def validation_problems(err: ValidationError) -> str:
    """Every offending key of ``err`` and what is wrong with it, on one line."""
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "<root>"
        msg = item["msg"]
        if item["type"] == "value_error":  # a validator's own message, without pydantic's prefix
            msg = str((item.get("ctx") or {}).get("error", msg))
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        elif not item["loc"]:
            parts.append(msg)
        else:
            parts.append(f"'{loc}': {msg}")
    return "; ".join(parts)


def _format_validation_error(err: ValidationError, source: str) -> str:
    return f"{source}: invalid config: {validation_problems(err)}"


def validate_config(cls: type[ConfigT], data: Any, source: str = "<config>") -> ConfigT:
    """Validate a mapping as ``cls``, raising :class:`ConfigError` naming ``source``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigError(
            f"{source}: config version {version!r} is not supported (expected {CONFIG_VERSION})"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(cls: type[ConfigT], path: str | Path, *, block: str | None = None) -> ConfigT:
    """Load and validate a YAML config file.

    Parameters
    ----------
    cls
        The config class to validate against.
    path
        The YAML file.
    block
        Also accept a file whose only key is ``block`` holding the settings (e.g. the
        ``analysis:`` block copied from a pipeline YAML).

    Raises
    ------
    ConfigError
        If the file is missing, empty, not YAML, or does not validate; the message
        names the file and the offending key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:  # an empty file would silently mean "all defaults" (for simulate: the paper grid)
        raise ConfigError(
            f"{path}: the config file is empty; expected a YAML mapping of settings ({{}} for the defaults)"
        )
    if (
        block is not None
        and isinstance(data, dict)
        and set(data) == {block}
        and isinstance(data[block], dict)
    ):
        data = data[block]
    return validate_config(cls, data, str(path))


def save_config(config: LowdoseConfig, path: str | Path) -> Path:
    """Write ``config`` as YAML atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config.to_yaml())
    tmp.replace(path)
    return path
