"""Every ``lowdose ...`` command the READMEs show exists, and its ``--help`` lists the options shown.

Commands are taken from shell code blocks (one per line, ``VAR=value`` prefixes and
``# comments`` dropped, ``lowdose <sub>`` mentioned in a comment checked for existence)
and from inline code spans that start with ``lowdose``. Each distinct subcommand gets one
``--help`` through typer's in-process runner. An optional ``[--option VALUE]`` is the
README stating a default, so it is compared with the option's real default.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from lowdose.cli import app

REPO = Path(__file__).resolve().parents[3]
DOCUMENTS = [REPO / "README.md", REPO / "deploy" / "README.md"]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```([\w-]*)\s*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`(lowdose (?:[^`])+)`")
MENTION = re.compile(r"\blowdose ([a-z][a-z-]*(?: [a-z][a-z-]*)?)")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
OPTION = re.compile(r"^--?[A-Za-z][\w-]*$")


@dataclass
class Shown:
    """One command line a document shows."""

    where: str
    words: list[str]
    defaults: dict[str, str] = field(default_factory=dict)
    """``[--option VALUE]`` pairs: the document claims VALUE is the default."""


def _words(text: str) -> tuple[list[str], dict[str, str]]:
    """Split a documented command into words; collect ``[--opt VALUE]`` defaults; drop brackets."""
    defaults = {
        opt: value
        for opt, value in re.findall(r"\[(--[\w-]+)[ =]([^\]\s|]+)\]", text)
        if not value.startswith("-")
    }
    words = []
    for word in shlex.split(text.replace("[", " ").replace("]", " ").replace("|", " | ")):
        if word.startswith("--") and "=" in word:
            word = word.split("=", 1)[0]
        words.append(word)
    return words, defaults


def shown_commands(path: Path, root: Path = REPO) -> list[Shown]:
    """The ``lowdose`` command lines shown in a Markdown document."""
    text = path.read_text()
    name = path.relative_to(root).as_posix()
    found: list[Shown] = []
    for block in FENCE.finditer(text):
        line_no = text.count("\n", 0, block.start()) + 1
        if block.group(1) not in SHELL_LANGUAGES:
            continue
        for offset, line in enumerate(block.group(2).replace("\\\n", " ").splitlines(), start=1):
            command, _, comment = line.partition(" #")
            words, defaults = _words(command) if not command.lstrip().startswith("#") else ([], {})
            while words and ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            where = f"{name}:{line_no + offset}"
            if words and words[0] == "lowdose":
                found.append(Shown(where, words[1:], defaults))
            for mention in MENTION.finditer(comment):
                found.append(Shown(where, mention.group(1).split()))
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for span in INLINE.finditer(prose):
        words, defaults = _words(span.group(1).replace("\n", " "))
        where = f"{name}:{prose.count(chr(10), 0, span.start()) + 1}"
        found.append(Shown(where, words[1:], defaults))
    return found


@functools.cache
def _root_command() -> Any:
    return typer.main.get_command(app)


def resolve(words: list[str]) -> tuple[list[str], Any, list[str]]:
    """Walk the command tree: ``(subcommand path, its click command, the remaining words)``."""
    # typer vendors its own click: a group is whatever has subcommands
    command: Any = _root_command()
    path: list[str] = []
    rest = list(words)
    while getattr(command, "commands", None) is not None and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        if sub is None:
            raise LookupError(f"`lowdose {' '.join([*path, rest[0]])}`: no such command")
        command = sub
        path.append(rest.pop(0))
    return path, command, rest


def problems(shown: list[Shown], help_text: dict[tuple[str, ...], str] | None = None) -> list[str]:
    """Everything the documents claim that the CLI does not do."""
    runner = CliRunner()
    helps = {} if help_text is None else help_text
    found = []
    for item in shown:
        try:
            path, command, rest = resolve(item.words)
        except LookupError as err:
            found.append(f"{item.where}: {err}")
            continue
        key = tuple(path)
        if key not in helps:
            result = runner.invoke(app, [*path, "--help"])
            if result.exit_code != 0:
                found.append(f"{item.where}: `lowdose {' '.join(path)} --help` exited {result.exit_code}")
            helps[key] = result.output
        params = {opt: p for p in command.params for opt in [*p.opts, *p.secondary_opts]}
        label = f"`lowdose {' '.join(path)}`"
        for word in rest:
            if not OPTION.match(word):
                continue
            if word not in params and word != "--help":
                found.append(f"{item.where}: {label} has no option {word}")
            elif word not in helps[key]:
                found.append(f"{item.where}: {label} --help does not show {word}")
        for opt, value in item.defaults.items():
            param = params.get(opt)
            if param is None or param.default is None or callable(param.default):
                continue
            if str(param.default) != value:
                found.append(f"{item.where}: {label} {opt} defaults to {param.default}, not {value}")
    return found


def test_readme_commands_exist_and_their_help_shows_every_option_used() -> None:
    shown = [item for doc in DOCUMENTS for item in shown_commands(doc)]
    subcommands = {tuple(resolve(item.words)[0]) for item in shown if item.words}
    # the READMEs show the whole CLI surface; a broken extractor would find next to nothing
    assert {("demo",), ("simulate",), ("train",), ("ingest",), ("run",), ("dashboard",)} <= subcommands
    assert ("cluster", "up") in subcommands
    assert problems(shown) == []


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("lowdose demo --no-such-flag", "has no option --no-such-flag"),
        ("lowdose demo [--frames 7]", "--frames defaults to"),
        ("lowdose nonexistent --out x", "no such command"),
        ("lowdose cluster nonexistent", "no such command"),
    ],
)
def test_checker_reports_what_the_cli_does_not_do(tmp_path: Path, line: str, complaint: str) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(f"Try `{line}`.\n\n```bash\n{line}   # see `lowdose demo`\n```\n")
    shown = shown_commands(doc, root=tmp_path)
    assert len(shown) == 3
    found = problems(shown)
    assert len(found) == 2 and all(complaint in text for text in found), found


def test_checker_accepts_what_the_cli_does(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(
        "```bash\nFOO=1 lowdose demo --no-serve --frames 48 \\\n"
        "  --workdir w  # then `lowdose catalog list`\n```\n"
        "`lowdose dashboard [--port 5006] [--address 127.0.0.1]`\n"
    )
    shown = shown_commands(doc, root=tmp_path)
    assert [item.words[:2] for item in shown] == [
        ["demo", "--no-serve"],
        ["catalog", "list"],
        ["dashboard", "--port"],
    ]
    assert problems(shown) == []
