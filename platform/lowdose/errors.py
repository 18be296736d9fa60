"""Errors that lowdose raises for bad user input.

Every error a user can cause by handing lowdose a file, a flag or a config is a
:class:`LowdoseInputError`: the CLI prints its message on one line and exits with
code 2, without a traceback. Never import heavy dependencies here.
"""

from __future__ import annotations


class LowdoseInputError(ValueError):
    """Bad input from the user: a config, a file, a flag or a catalog entry.

    The message must name the offending file/field and what was expected.
    """


class ConfigError(LowdoseInputError):
    """A YAML config that does not validate (unknown key, bad value, bad YAML)."""


class StoreError(LowdoseInputError):
    """A zarr store that is missing, of the wrong layout, or corrupt."""


class StorageFullError(StoreError):
    """The disk, quota or a file-size limit ran out while writing a store.

    What was committed before stays valid; re-running the same command once
    space is freed resumes. Writers must not delete their partial output for it.
    """


class FormatError(LowdoseInputError):
    """An input file that cannot be read as the format it claims to be."""
