import numpy as np

from dnet.data.datasets import open_dataset


def test_digits_split_sizes_and_values():
    train, test = open_dataset("digits", split="train"), open_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 8, 8, 3) and train.images.dtype == np.uint8
    assert train.images.max() == 255 and train.num_classes == 10
    assert np.bincount(test.labels).min() >= 35  # stratified
    # the spec's constants are the training split's statistics
    x = train.images.astype(np.float64)
    assert abs(x.mean() - train.spec.mean[0]) < 0.1 and abs(x.std() - train.spec.std[0]) < 0.1
