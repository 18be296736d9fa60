"""Session-wide tally of the fault-injection suite: faults injected, runs that survived, data lost.

Loaded as a plugin from ``tests/conftest.py`` (``pytest_plugins``) so that the xdist
controller, which collects nothing, still has these hooks: each process keeps its own
records, xdist workers hand theirs back through ``config.workeroutput``, and the
controller (or the single process with ``-n 0``) prints one line at the end::

    faults: 14 injected, 14 survived, 0 lost (0 frames lost, 0 duplicated)

and fails the session if any run lost or duplicated data. Tests record through the
``faults`` fixture (``tests/faults/conftest.py``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

WORKER_OUTPUT_KEY = "lowdose_faults"


@dataclass
class FaultRecord:
    """One injected fault and what became of the run it hit."""

    test: str
    kind: str
    detail: str
    outcome: str = "unresolved"  # survived | lost | unresolved (the test died before judging)
    frames_lost: int = 0
    frames_duplicated: int = 0


@dataclass
class FaultLedger:
    """Every fault record of this process (and, on the controller, of its workers)."""

    records: list[FaultRecord] = field(default_factory=list)
    not_injected: dict[str, str] = field(default_factory=dict)  # kind -> why it is not in the suite

    def inject(self, test: str, kind: str, detail: str) -> FaultRecord:
        record = FaultRecord(test=test, kind=kind, detail=detail)
        self.records.append(record)
        return record

    def merge(self, payload: str) -> None:
        data = json.loads(payload)
        self.records.extend(FaultRecord(**item) for item in data["records"])
        self.not_injected.update(data["not_injected"])

    def dump(self) -> str:
        return json.dumps({"records": [asdict(r) for r in self.records], "not_injected": self.not_injected})

    def totals(self) -> dict[str, int]:
        outcomes = Counter(r.outcome for r in self.records)
        return {
            "injected": len(self.records),
            "survived": outcomes["survived"],
            "lost": outcomes["lost"],
            "unresolved": outcomes["unresolved"],
            "frames_lost": sum(r.frames_lost for r in self.records),
            "frames_duplicated": sum(r.frames_duplicated for r in self.records),
        }

    def summary_line(self) -> str:
        t = self.totals()
        line = (
            f"faults: {t['injected']} injected, {t['survived']} survived, {t['lost']} lost "
            f"({t['frames_lost']} frames lost, {t['frames_duplicated']} duplicated)"
        )
        if t["unresolved"]:
            line += f", {t['unresolved']} unresolved (test failed before judging the run)"
        return line

    def by_kind(self) -> list[str]:
        kinds: dict[str, Counter[str]] = {}
        for r in self.records:
            kinds.setdefault(r.kind, Counter())[r.outcome] += 1
        return [
            f"  {kind}: {sum(c.values())} injected, {c['survived']} survived, {c['lost']} lost"
            for kind, c in sorted(kinds.items())
        ]


LEDGER = pytest.StashKey[FaultLedger]()


def ledger_of(config: pytest.Config) -> FaultLedger:
    """The ledger of this pytest process."""
    return config.stash[LEDGER]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[LEDGER] = FaultLedger()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: take over a finished worker's records."""
    payload = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if payload:
        ledger_of(node.config).merge(payload)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    ledger = ledger_of(config)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: report to the controller
        workeroutput[WORKER_OUTPUT_KEY] = ledger.dump()
        return
    totals = ledger.totals()
    if totals["lost"] or totals["frames_lost"] or totals["frames_duplicated"]:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workeroutput"):
        return
    ledger = ledger_of(config)
    if not ledger.records and not ledger.not_injected:
        return
    terminalreporter.write_sep("-", "fault injection (tests/faults)")
    for line in ledger.by_kind():
        terminalreporter.write_line(line)
    if config.get_verbosity() > 0:
        for r in sorted(ledger.records, key=lambda r: (r.kind, r.test)):
            terminalreporter.write_line(f"    {r.outcome:<10} {r.kind}: {r.detail}  [{r.test}]")
    for kind, reason in sorted(ledger.not_injected.items()):
        terminalreporter.write_line(f"  {kind}: not injected — {reason}")
    totals = ledger.totals()
    bad = totals["lost"] or totals["frames_lost"] or totals["frames_duplicated"] or totals["unresolved"]
    terminalreporter.write_line(ledger.summary_line(), red=bool(bad), green=not bad, bold=True)
