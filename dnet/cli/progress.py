"""Progress on a terminal: each stage of a long job on stderr as it starts and with its seconds when it ends, a bar for
stages that can count their work. Off (a silent :class:`~dnet.core.progress.Recorder`) with ``--quiet`` or when stderr
is not a terminal, on every verb alike."""

from __future__ import annotations

import sys

from dnet.core.progress import Recorder


class TerminalProgress(Recorder):
    """A :class:`Recorder` that also draws: ``name …`` while a stage runs, ``name  12.3 s`` when it is done."""

    live = True

    def __init__(self, stream=None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self._bar = None

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        super().stage(name, total, unit)
        if total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=name, unit=unit or "it", file=self.stream, leave=False)
        else:
            self.stream.write(f"{name} …")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        if self._bar is not None:
            self._bar.update(n)

    def _end(self) -> None:
        current = self.current
        super()._end()
        if current is None:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"{current.name}  {current.seconds:.1f} s\n")
        self.stream.flush()


def progress_for(quiet: bool) -> Recorder:
    """What a verb reports its stages to: drawn on the terminal unless ``--quiet`` or stderr is not a terminal."""
    return TerminalProgress() if not quiet and sys.stderr.isatty() else Recorder()


def shows_progress(quiet: bool) -> bool:
    """Whether a verb draws progress: never with ``--quiet``, never when stderr is not a terminal."""
    return not quiet and sys.stderr.isatty()


def _number(v) -> str:
    """Three significant digits; a similarity just under 1 (a cosine, an agreement) with four decimals, where
    three significant digits would round 0.9996 up to 1."""
    if isinstance(v, float):
        return f"{v:.4f}" if 0.9 <= v < 1.0 else f"{v:.3g}"
    if isinstance(v, dict):  # per-stage numbers: ``(block1 0.9995, transition1 0.9991)``
        return "(" + ", ".join(f"{k} {_number(x)}" for k, x in v.items()) + ")"
    return str(v)


def format_check(check: dict) -> str:
    """One check on one line: ``fp16_vs_fp32  batch 8  rel_l2 0.00102  bound 0.00195  top1_agreement 1``."""
    return f"{check['check']}  " + "  ".join(f"{k} {_number(v)}" for k, v in check.items() if k != "check")


__all__ = ["TerminalProgress", "format_check", "progress_for", "shows_progress"]
