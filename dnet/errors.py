"""The project's own small error hierarchy.

Library code raises these; the CLI prints ``dnet: error: <message>`` on one line and exits with
``exit_code``. Anything else escaping the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class DnetError(Exception):
    """Base of every error a user can cause and fix."""

    exit_code = 1


class UsageError(DnetError):
    """A name, option or value the user gave is not accepted."""

    exit_code = 2


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


class EngineError(DnetError):
    """A model file that cannot be run here (missing runtime, wrong GPU or version)."""


class NotInstalledError(EngineError):
    """An optional dependency (TensorRT, CUDA, an execution provider) is not installed."""


class AccuracyError(DnetError):
    """A measured error worse than the published one by more than the tolerance."""

    exit_code = 3
