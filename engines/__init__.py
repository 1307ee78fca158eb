"""One small protocol for running any model file on a batch: ``dnet.engines.open(path)`` picks by file kind."""

from dnet.engines.base import Engine, open

__all__ = ["Engine", "open"]
