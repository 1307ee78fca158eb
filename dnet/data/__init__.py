"""Data sets and preprocessing."""

from dnet.data.specs import SPECS, PreprocessSpec, get_spec
from dnet.data.transforms import preprocess, preprocess_array

__all__ = ["SPECS", "PreprocessSpec", "get_spec", "preprocess", "preprocess_array"]
