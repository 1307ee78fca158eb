"""Feeding a model file batches of a data set and counting hits: :func:`evaluate`.

``evaluate`` feeds an :class:`dnet.engines.base.Engine` batches decoded in worker processes (a torch ``DataLoader``),
counts top-k hits and, under torchrun, shards the images by rank (:mod:`dnet.apps.eval.sharding`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch.distributed as dist

from dnet import engines
from dnet.apps.eval.metrics import binomial_ci95, error_percent, reduce_ten_crop, top5_labels, topk_hits
from dnet.apps.eval.report import EvalReport
from dnet.apps.eval.sharding import rank_and_world, sum_over_ranks
from dnet.core.errors import DataError, UsageError
from dnet.core.similarity import require_finite
from dnet.core.specs import PreprocessSpec, get_spec
from dnet.data.base import evenly_spread
from dnet.data.batches import array_batches, file_batches
from dnet.data.datasets import DATASETS, ArrayDataset, FileDataset
from dnet.models import zoo


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def choose_spec(engine, dataset, preprocess: str | PreprocessSpec | None) -> PreprocessSpec:
    """Explicit override, else the model file's own preprocessing, else the data set's (CIFAR, SVHN, digits)."""
    if preprocess is not None:
        return get_spec(preprocess) if isinstance(preprocess, str) else preprocess
    meta = getattr(engine, "meta", None)
    if meta is not None:
        return meta.preprocess
    if dataset.spec is not None:
        return dataset.spec
    raise UsageError(f"{engine.path.name} carries no preprocessing metadata; say how to feed it: name a "
                     f"preprocessing (torch7 or torchvision)", option="preprocess")


def evaluate(engine_or_path, dataset: ArrayDataset | FileDataset, *, batch: int = 32, limit: int | None = None,
             workers: int | None = None, preprocess: str | PreprocessSpec | None = None, ten_crop: bool = False,
             skip_bad: bool = False, progress: bool = True) -> EvalReport:
    """Evaluate a model file (or an open Engine) on ``dataset``; see the module docstring."""
    if isinstance(engine_or_path, str | os.PathLike):
        with engines.open(engine_or_path) as engine:
            return evaluate(engine, dataset, batch=batch, limit=limit, workers=workers, preprocess=preprocess,
                            ten_crop=ten_crop, skip_bad=skip_bad, progress=progress)
    engine = engine_or_path
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    if len(dataset) == 0:
        raise DataError(f"data set {dataset.name} holds no images")
    spec = choose_spec(engine, dataset, preprocess)
    if ten_crop and (isinstance(dataset, ArrayDataset) or spec.interpolation != "lua-bicubic"):
        raise UsageError("ten crops need an image data set (imagenet, folder) and the torch7 preprocessing",
                         option="ten_crop")
    meta = engine.meta
    if meta is not None and meta.num_classes != dataset.num_classes:
        raise DataError(f"the model has {meta.num_classes} classes but data set {dataset.name} has "
                        f"{dataset.num_classes}; evaluate it on the data set it was trained for")
    fixed = engine.input_shape[0] if engine.input_shape[0] > 0 else None
    if fixed is not None:
        batch = fixed // 10 if ten_crop else fixed
        if batch < 1:
            raise UsageError(f"{engine.path.name} has a fixed batch of {fixed}, too small for ten crops")

    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}", option="limit")
    n = len(dataset)
    # --limit N: N images spread evenly over the set (sorted sets such as ImageNet keep every class), the ones
    # a conversion's --val-count N picks of the same folder
    indices = np.arange(n) if limit is None else evenly_spread(n, limit)
    rank, world = rank_and_world()
    group_owned = False
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("gloo")
            group_owned = True
        indices = indices[rank::world]  # shard by rank: every image is seen by exactly one process

    if isinstance(dataset, FileDataset):
        workers = default_workers() if workers is None else workers
        batches = file_batches(dataset, indices, spec, ten_crop, batch, workers)
    else:
        batches = array_batches(dataset, indices, spec, batch)

    bar = None
    if progress and rank == 0 and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(indices), unit="img", desc=f"eval {dataset.name}", file=sys.stderr, leave=False)
    top1 = top5 = seen = 0
    skipped: list[str] = []
    predictions = []
    engine_seconds = 0.0
    start = time.perf_counter()
    try:
        for x, labels, idx, errors in batches:
            if not skip_bad and any(errors):
                raise DataError(next(e for e in errors if e))
            ok = np.asarray([not e for e in errors], dtype=bool)
            skipped += [e for e in errors if e]
            if not ok.any():
                continue
            x, labels, idx = x[ok], labels[ok], idx[ok]
            feed = x.reshape((-1,) + x.shape[2:]) if ten_crop else x
            rows = len(feed)
            if fixed is not None and rows < fixed:  # a static-batch engine: pad the last batch
                feed = np.concatenate([feed, np.zeros((fixed - rows,) + feed.shape[1:], feed.dtype)])
            t0 = time.perf_counter()
            logits = require_finite(engine(feed)[:rows], Path(engine.path).name)
            engine_seconds += time.perf_counter() - t0
            if ten_crop:
                logits = require_finite(reduce_ten_crop(logits), Path(engine.path).name)
            if logits.shape[1] != dataset.num_classes:
                raise DataError(f"the model has {logits.shape[1]} classes but data set {dataset.name} has "
                                f"{dataset.num_classes}; evaluate it on the data set it was trained for")
            h1, h5 = topk_hits(logits, labels, 1), topk_hits(logits, labels, 5)
            top1 += int(h1.sum())
            top5 += int(h5.sum())
            seen += len(labels)
            best = top5_labels(logits)
            predictions += [(int(i), int(lab), tuple(int(c) for c in b), bool(h))
                            for i, lab, b, h in zip(idx, labels, best, h1, strict=True)]
            if bar is not None:
                bar.update(len(errors))
                bar.set_postfix_str(f"top-1 err {error_percent(top1, seen):.2f} %")
        seconds = time.perf_counter() - start
        if world > 1:
            seen, top1, top5, seconds, engine_seconds, skipped, predictions = sum_over_ranks(
                seen, top1, top5, seconds, engine_seconds, skipped, predictions)
    finally:
        if bar is not None:
            bar.close()
        if group_owned:
            dist.destroy_process_group()

    if seen == 0:
        raise DataError(f"no image of {dataset.name} could be evaluated ({len(skipped):,} skipped)")
    model = meta.model if meta is not None else "unknown"
    augmented = bool(meta.extra.get("augmented", True)) if meta is not None else True
    e1, e5 = error_percent(top1, seen), error_percent(top5, seen)
    comparisons = zoo.comparisons(model if meta is not None else None, dataset.name, spec.name,
                                  {"top1": e1, "top5": e5}, ten_crop=ten_crop, augmented=augmented)
    return EvalReport(
        engine=str(Path(engine.path).name), model=model, dataset=dataset.name, split=dataset.split,
        preprocess=spec.name, ten_crop=ten_crop, images=seen, top1_correct=top1, top5_correct=top5,
        top1_error=e1, top5_error=e5, top1_ci95=binomial_ci95(seen - top1, seen),
        top5_ci95=binomial_ci95(seen - top5, seen), seconds=seconds,
        throughput=seen / seconds if seconds > 0 else float("inf"), engine_seconds=engine_seconds,
        engine_throughput=seen / engine_seconds if engine_seconds > 0 else float("inf"),
        comparisons=comparisons,
        skipped=tuple(sorted(skipped)), world_size=world, predictions=tuple(sorted(predictions)),
        test_set=DATASETS[dataset.name].test_images if dataset.name in DATASETS and dataset.split == "test" else None,
    )
