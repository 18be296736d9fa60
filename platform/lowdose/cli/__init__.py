"""The ``lowdose`` command line.

Thin by design: each command module in this package parses its flags, builds a
config and calls the Python API. Command modules are discovered automatically:
every ``lowdose.cli.<name>`` module that defines ``register(app)`` adds its
commands. Heavy imports (torch, dask, abTEM) happen inside the command bodies so
that ``lowdose --help`` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import sys

import typer

from lowdose.errors import LowdoseInputError

app = typer.Typer(
    name="lowdose",
    help="Ultra-low-dose, time-resolved TEM: simulate, train, denoise and analyse at scale.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Ultra-low-dose, time-resolved TEM: simulate, train, denoise and analyse at scale."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


PATH_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS}
)
"""OSErrors about a path the user named (an output folder that cannot be made, a file in the way)."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lowdose`` console script.

    User errors (:class:`~lowdose.errors.LowdoseInputError`), a full disk and a path
    that cannot be created or written (no such folder, not a folder, permission
    denied, read-only file system: an OSError naming the file) are printed on one line
    to stderr and exit with code 2; other exceptions keep their traceback. Commands
    check their output paths first, so the path named is normally one the user gave.
    """
    try:
        app(args=argv, standalone_mode=True)
    except LowdoseInputError as err:
        print(f"lowdose: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        # A full disk wherever no store-specific message caught it: still one line, naming the file.
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            where = err.filename or "output"
            reason = os.strerror(err.errno)
            print(
                f"lowdose: error: {where}: out of storage ({reason}); free space and re-run", file=sys.stderr
            )
            raise SystemExit(2) from None
        if err.errno in PATH_ERRNOS and err.filename is not None:
            print(f"lowdose: error: {err.filename}: {os.strerror(err.errno)}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
