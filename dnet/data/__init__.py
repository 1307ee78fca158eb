"""Data sets and preprocessing (importing the package registers every data set's spec: digits, svhn)."""

from dnet.data import datasets
from dnet.data.specs import SPECS, PreprocessSpec, get_spec
from dnet.data.transforms import preprocess, preprocess_array

__all__ = ["SPECS", "PreprocessSpec", "datasets", "get_spec", "preprocess", "preprocess_array"]
