"""Batches of preprocessed images for an engine: decoded in worker processes (a torch ``DataLoader``) from image
files, or sliced from an image array; each batch is (inputs, labels, indices, one error line per image or '')."""

from __future__ import annotations

import numpy as np
import torch.utils.data

from dnet.core.errors import DataError
from dnet.core.specs import PreprocessSpec
from dnet.data.datasets import ArrayDataset, FileDataset
from dnet.data.transforms import preprocess as preprocess_image
from dnet.data.transforms import preprocess_array


class _Decoded:
    """Map-style data set for a torch DataLoader: image i → (input, label, index, error message or '').

    A decoding error travels back as a value (a blank input and its one-line message), never as an exception
    through the worker processes, so the caller decides whether it skips the image or fails with that line.
    """

    def __init__(self, dataset: FileDataset, indices: np.ndarray, spec: PreprocessSpec, ten_crop: bool) -> None:
        self.paths, self.labels, self.indices = dataset.paths, dataset.labels, indices
        self.spec, self.ten_crop = spec, ten_crop
        size = spec.crop or spec.input_size
        self.blank_shape = ((10,) if ten_crop else ()) + (3, size, size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        try:
            x = preprocess_image(self.paths[index], self.spec, ten_crop=self.ten_crop)
            if x.shape != self.blank_shape:  # never a batch of mixed shapes: one image's problem stays its own
                raise DataError(f"{self.paths[index]}: preprocessed to {'×'.join(map(str, x.shape))}, the model "
                                f"takes {'×'.join(map(str, self.blank_shape))}")
        except DataError as e:
            return np.zeros(self.blank_shape, np.float32), int(self.labels[index]), index, str(e)
        return x, int(self.labels[index]), index, ""


def _collate(items):
    xs, labels, indices, errors = zip(*items, strict=True)
    return np.stack(xs), np.asarray(labels, np.int64), np.asarray(indices, np.int64), list(errors)


def file_batches(dataset: FileDataset, indices, spec, ten_crop, batch, workers):
    source = _Decoded(dataset, indices, spec, ten_crop)
    if workers <= 0:
        for start in range(0, len(source), batch):
            yield _collate([source[i] for i in range(start, min(start + batch, len(source)))])
        return
    yield from torch.utils.data.DataLoader(source, batch_size=batch, shuffle=False, num_workers=workers,
                                           collate_fn=_collate, prefetch_factor=4, persistent_workers=False)


def array_batches(dataset: ArrayDataset, indices, spec, batch):
    for start in range(0, len(indices), batch):
        chosen = indices[start:start + batch]
        yield preprocess_array(dataset.images[chosen], spec), dataset.labels[chosen], chosen, [""] * len(chosen)
