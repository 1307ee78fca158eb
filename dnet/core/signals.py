"""SIGINT and SIGTERM as exceptions, so every ``finally`` block (temporary files, scratch folders) runs, and which
signal interrupted the process, so the CLI reports an interrupt that a library turned into another error as itself."""

from __future__ import annotations

import contextlib
import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM (plain ``kill``, ``timeout``, ``docker stop``, systemd), raised like Ctrl-C so cleanup runs."""

    signum = signal.SIGTERM


_received: list[int] = []  # the signals this process turned into exceptions, newest last


def _raise_terminated(signum, frame) -> None:
    _received.append(signum)
    raise Terminated()


def _raise_interrupt(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` (a KeyboardInterrupt) in this process, so ``finally`` blocks run, and
    remember SIGINT and SIGTERM as they arrive (:func:`interrupted_by`).

    Python's default SIGTERM action ends the process at once, skipping every cleanup; the CLI installs this.
    """
    with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
        signal.signal(signal.SIGTERM, _raise_terminated)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _raise_interrupt)


def interrupted_by() -> int | None:
    """The signal that interrupted this process since :func:`forget_signals`, if one did.

    A library can catch the KeyboardInterrupt and raise something else instead: a SIGTERM that lands while
    ``torch.onnx.export`` lazily imports ``torch._dynamo`` surfaces as torch's ``TorchExportError`` (its except
    clause fails on the half-imported module). The CLI asks this to report such an error as the interrupt it is.
    """
    return _received[-1] if _received else None


def forget_signals() -> None:
    _received.clear()
