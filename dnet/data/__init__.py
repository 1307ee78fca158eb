"""Data sets and preprocessing."""

from dnet.data.specs import SPECS, PreprocessSpec, get_spec

__all__ = ["SPECS", "PreprocessSpec", "get_spec"]
