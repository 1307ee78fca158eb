"""The project's own small error hierarchy.

Library code raises these; the CLI prints ``dnet: error: <message>`` on one line and exits with
``exit_code``. Anything else escaping the CLI is a bug and keeps its traceback.

Messages speak the library's terms. An error about one option names it in ``option`` (the field of the options
dataclass, e.g. ``"calib_method"``); the CLI appends the flag that sets it (``(--calib-method)``), so the library
never needs to know its command line.
"""

from __future__ import annotations


class DnetError(Exception):
    """Base of every error a user can cause and fix."""

    exit_code = 1

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class UsageError(DnetError):
    """A name, option or value the user gave is not accepted."""

    exit_code = 2


def require_one_of(what: str, value, allowed, option: str | None = None) -> None:
    """UsageError '{what} must be one of a, b, got value' unless ``value`` is in ``allowed``."""
    if value not in allowed:
        raise UsageError(f"{what} must be one of {', '.join(map(str, allowed))}, got {value!r}", option=option)


class ConfigError(UsageError):
    """An impossible model configuration; the message names the field."""


class UnknownModelError(UsageError):
    """A model name that is not in the zoo; the message names the closest names."""


class FileFormatError(DnetError):
    """A file that is corrupt, truncated or not of the kind expected."""


class UnsafeFileError(FileFormatError):
    """A file that would need code to be executed to be read (pickled code, Lua functions)."""


class DataError(DnetError):
    """A data set or image folder that is missing, empty, undecodable or laid out wrongly."""


class DownloadError(DataError):
    """A download (data set or published weights) that failed: unreachable, cut short, or not the published bytes."""


class EngineError(DnetError):
    """A model file that cannot be run here (missing runtime, wrong GPU or version)."""


_OUT_OF_MEMORY = ("bad_alloc", "failed to allocate memory", "out of memory", "cannot allocate memory")


def runtime_failure(name: str, runtime: str, e: BaseException, batch: int | None = None, where: str = "") -> EngineError:
    """The one line of a runtime that failed to run a model: out of memory said as such (it is fixed by a smaller
    batch, not by another file), anything else as the runtime's first line."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError) or any(m in first.lower() for m in _OUT_OF_MEMORY):
        rows = f" a batch of {batch:,}" if batch else ""
        return EngineError(f"{name}: out of memory running{rows} in {runtime} ({first[:160]}); use a smaller batch "
                           "size or free some memory")
    return EngineError(f"{name}: {runtime} cannot run it{where} ({first[:200]})")


class NotInstalledError(EngineError):
    """An optional dependency (TensorRT, CUDA, an execution provider) is not installed."""


class ModelOutputError(DnetError):
    """A model whose outputs are NaN or infinite (broken weights or preprocessing): nothing can be scored."""


class InputModifiedError(DnetError):
    """The input file changed during a conversion (a library wrote into it); never expected."""


class TrainingDiverged(DnetError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class AccuracyError(DnetError):
    """A measured error worse than the published one by more than the tolerance."""

    exit_code = 3


class DnetWarning(UserWarning):
    """Something a user should know that does not stop the command (the CLI prints ``dnet: warning: ...``)."""
