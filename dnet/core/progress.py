"""How long library work reports itself: stages, units of work within a stage, and the checks it ran.

Library functions take a :class:`Progress` and never print. The base class ignores everything (the default);
:class:`Recorder` keeps what happened (each stage's seconds, each check's numbers) for ``--json`` and for callers
that want the numbers; the command line draws it on a terminal (``dnet.cli.progress``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class Progress:
    """The receiver of a long job's reports; this base class ignores them."""

    # True when the reports are drawn on a terminal: a step with a live display of its own (a download's bar,
    # TensorRT's build phases) may then draw it too; a recording or silent receiver keeps the terminal clean.
    live: bool = False

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        """A stage begins (and the previous one ends); ``total`` units of ``unit`` when it can count them."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units of the current stage are done."""

    def check(self, name: str, **numbers) -> None:
        """A verification ran: its name and its numbers (measured values and their bounds)."""

    def close(self) -> None:
        """The job is over: the last stage ends."""


QUIET = Progress()


@dataclass
class StageRecord:
    name: str
    seconds: float = 0.0
    total: int | None = None
    unit: str = ""
    done: int = 0

    def to_dict(self) -> dict:
        d = {"stage": self.name, "seconds": round(self.seconds, 3)}
        if self.total is not None:
            d.update(total=self.total, done=self.done, unit=self.unit)
        return d


@dataclass
class Recorder(Progress):
    """Keeps every stage (with its duration) and every check (with its numbers), in order."""

    stages: list[StageRecord] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    _started: float | None = field(default=None, repr=False)

    @property
    def current(self) -> StageRecord | None:
        return self.stages[-1] if self.stages and self._started is not None else None

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        self._end()
        self.stages.append(StageRecord(name, total=total, unit=unit))
        self._started = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        if self.current is not None:
            self.current.done += n

    def check(self, name: str, **numbers) -> None:
        self.checks.append({"check": name, **numbers})

    def close(self) -> None:
        self._end()

    def _end(self) -> None:
        if self.current is not None:
            self.current.seconds = time.perf_counter() - self._started
        self._started = None

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages], "checks": list(self.checks)}


__all__ = ["QUIET", "Progress", "Recorder", "StageRecord"]
