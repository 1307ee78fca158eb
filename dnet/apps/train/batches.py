"""Mini-batches for training and testing, the same for one process and many, and for a resumed run.

The data order of an epoch comes from a ``DistributedSampler`` seeded with (seed, epoch), augmentation choices from
(seed, epoch, index): nothing depends on the batch size, the number of processes or where a run was resumed.
Array data sets (CIFAR, SVHN, digits) are normalised and augmented a batch at a time; image files (ImageNet) are
decoded per sample, augmented the fb.resnet.torch way for training and preprocessed exactly as ``dnet eval`` does
(Lua-exact torch7) for testing, so training and ``dnet eval`` report error on the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.utils.data

from dnet.apps.train import augment
from dnet.apps.train.distributed import Distributed
from dnet.apps.train.recipe import TrainConfig
from dnet.core.errors import DataError
from dnet.core.specs import PreprocessSpec, get_spec
from dnet.data.datasets import ArrayDataset, open_dataset, open_train_val
from dnet.data.download import where_to_get
from dnet.data.images import open_image
from dnet.data.transforms import preprocess


def open_training_data(cfg: TrainConfig):
    """(train, validation or None, test); a missing folder gets a line saying how to get the data.

    The validation split is the one the recipe holds out of the training data (SVHN: 6,000 images, the paper's
    model selection); other data sets have none and select on the test split, as train.lua does.
    """
    if cfg.dataset != "digits" and not cfg.download:
        if cfg.data is None:
            raise DataError(f"--data is needed for {cfg.dataset}: a folder holding it "
                            f"(from {where_to_get(cfg.dataset)}), or add --download")
        if not Path(cfg.data).is_dir():
            raise DataError(f"data folder {cfg.data} does not exist: put {cfg.dataset} there "
                            f"(from {where_to_get(cfg.dataset)}) or pass --download")
    train_set, val_set = open_train_val(cfg.dataset, cfg.data, download=cfg.download)
    test_set = open_dataset(cfg.dataset, cfg.data, "test", download=cfg.download)
    if len(train_set) == 0 or len(test_set) == 0:
        raise DataError(f"data set {cfg.dataset} in {cfg.data}: the train or test split is empty")
    return train_set, val_set, test_set


def dataset_spec(ds) -> PreprocessSpec:
    spec = getattr(ds, "spec", None)
    return spec if spec is not None else get_spec("torch7")


class _FileSplit(torch.utils.data.Dataset):
    """ImageNet-style files decoded and augmented per sample, with choices drawn from (seed, epoch, index)."""

    def __init__(self, ds, spec: PreprocessSpec, train: bool, seed: int = 0, epoch: int = 0) -> None:
        self.ds, self.spec, self.train, self.seed, self.epoch = ds, spec, train, seed, epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        path = self.ds.paths[i]
        if self.train:
            x = augment.imagenet_train(open_image(path), self.spec, augment.epoch_generator(self.seed, self.epoch, 2 + i))
        else:
            x = torch.from_numpy(preprocess(path, self.spec))  # exactly what dnet eval feeds the model
        return x, int(self.ds.labels[i])


class Batches:
    """Mini-batches of one split for one epoch: normalised (and augmented) tensors with their labels."""

    def __init__(self, ds, cfg: TrainConfig, d: Distributed, *, train: bool, epoch: int) -> None:
        self.ds, self.cfg, self.train, self.epoch = ds, cfg, train, epoch
        self.spec = dataset_spec(ds)
        if train:
            # The data order of every process: a DistributedSampler seeded with (seed, epoch), also for one
            # process, so one process with batch B sees the same samples per step as two with B/2 each.
            sampler = torch.utils.data.DistributedSampler(
                range(len(ds)), num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed, drop_last=False)
            sampler.set_epoch(epoch)
            order = list(sampler)
        else:
            order = list(range(d.rank, len(ds), d.world))
        self.batches = [order[i:i + cfg.batch] for i in range(0, len(order), cfg.batch)]
        self.aug = augment.ARRAY_AUGMENT.get(cfg.dataset) if (train and cfg.augment) else None
        if isinstance(ds, ArrayDataset) and self.aug is not None:
            self.offsets, self.flips = self.aug.draw(len(ds), cfg.seed, epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        if isinstance(self.ds, ArrayDataset):
            for idx in self.batches:
                x = augment.normalize(self.ds.images[idx], self.spec)
                if self.aug is not None:
                    x = self.aug.apply(x, self.offsets[idx], self.flips[idx])
                yield x, torch.as_tensor(self.ds.labels[idx])
            return
        files = _FileSplit(self.ds, self.spec, self.train and self.cfg.augment, self.cfg.seed, self.epoch)
        loader = torch.utils.data.DataLoader(files, batch_sampler=self.batches, num_workers=self.cfg.workers)
        try:
            yield from loader
        except DataError as e:  # from a worker, torch adds the worker's traceback to the message: keep our line
            line = str(e).strip().splitlines()[-1]
            raise DataError(line.removeprefix(f"{DataError.__module__}.DataError: ")) from None


__all__ = ["Batches", "dataset_spec", "open_training_data"]
