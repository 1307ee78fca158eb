"""Data files the tests write (CIFAR binary records, a tiny ImageNet validation layout, image arrays and the ways
they go wrong), and a stub engine posing as a zoo ImageNet model on such a folder."""

from __future__ import annotations

import dataclasses
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from dnet.core.artifact import ArtifactMeta
from dnet.core.specs import get_spec
from dnet.engines.base import Engine


def write_cifar_bin(path: Path, n: int, label_bytes: int = 1, num_classes: int = 10, seed: int = 0):
    """n records in the CIFAR binary format; returns (images N×32×32×3, fine labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n, dtype=np.uint8)
    records = [np.concatenate([rng.integers(0, 20, label_bytes - 1, dtype=np.uint8), [lab],
                               img.transpose(2, 0, 1).reshape(-1)]).astype(np.uint8)
               for img, lab in zip(images, labels, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.concatenate(records).tobytes())
    return images, labels.astype(np.int64)


# --- a zoo ImageNet model without weights: a stub engine answering prepared logits per image ----------------

SMALL_TORCH7 = dataclasses.replace(get_spec("torch7"), resize=36, crop=32, input_size=32)  # torch7 arithmetic, small


def write_imagenet_val(root: Path, levels: list[int], labels: list[int], classes: int = 1000) -> Path:
    """A flat ImageNet validation folder: one uniform grey PNG per level, LOC_val_solution.csv with each image's
    synset, LOC_synset_mapping.txt naming ``classes`` synsets (so the data set has ImageNet's 1000 classes)."""
    synsets = [f"n{i:08d}" for i in range(classes)]
    images = root / "val"
    images.mkdir(parents=True)
    rows = ["ImageId,PredictionString"]
    for i, (level, label) in enumerate(zip(levels, labels, strict=True)):
        name = f"ILSVRC2012_val_{i + 1:08d}"
        Image.fromarray(np.full((36, 40, 3), level, np.uint8)).save(images / f"{name}.png")
        rows.append(f"{name},{synsets[label]} 0 0 10 10")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{s} class {i}\n" for i, s in enumerate(synsets)))
    return images


class TableEngine(Engine):
    """A stub engine for uniform grey images: it recognises an image by its (normalised) first pixel and answers
    that image's prepared logits, for a single crop and for each of the ten crops alike."""

    kind = "table"

    def __init__(self, model: str, levels: list[int], logits: np.ndarray, spec=SMALL_TORCH7):
        self.path = Path(f"{model}.stub")
        self.meta = ArtifactMeta(model, logits.shape[1], spec.input_size, spec)
        self.input_shape = (-1, 3, spec.input_size, spec.input_size)
        self.keys = np.asarray([(level / 255.0 - spec.mean[0]) / spec.std[0] for level in levels], np.float32)
        self.logits = np.asarray(logits, np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        rows = np.abs(batch[:, 0, 0, 0][:, None] - self.keys[None, :]).argmin(axis=1)
        return self.logits[rows]


def ranked_logits(labels: list[int], ranks: list[int], classes: int = 1000) -> np.ndarray:
    """Logits per image in which the true label has the given rank (0 = best): scores fall with the class index,
    and the label is moved to position ``rank``."""
    out = np.zeros((len(labels), classes), np.float32)
    for row, (label, rank) in enumerate(zip(labels, ranks, strict=True)):
        order = [c for c in range(classes) if c != label]
        order.insert(rank, label)
        out[row, order] = np.linspace(1.0, 0.0, classes, dtype=np.float32)
    return out


# --- image arrays (.npz/.npy) and CIFAR folders, and the ways they go wrong -------------------------------

RNG = np.random.default_rng(0)


IMAGES = RNG.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


LABELS = np.array([0, 3, 9, 1, 2, 9])


def write_cifar_folder(folder, images, labels, name="test_batch.bin"):
    """``images`` (uint8 N×32×32×3) as CIFAR-10 binary records: label byte, then the R, G, B planes."""
    folder.mkdir(parents=True, exist_ok=True)
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], images.transpose(0, 3, 1, 2).reshape(len(images), -1)],
                             axis=1)
    (folder / name).write_bytes(records.tobytes())
    return folder


def _truncated_npy(path):
    np.save(path, IMAGES)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 1000])


def _pickled_npy(path):
    path.write_bytes(pickle.dumps(IMAGES))


def _object_npz(path):
    np.savez(path, images=np.array([IMAGES[0], "x"], dtype=object))


def _inflated_claim(path):
    """A deflated member whose zip entry claims 10 GB: refused before inflating anything."""
    np.savez_compressed(path, images=IMAGES)
    data = bytearray(path.read_bytes())
    for magic, field in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = data.index(magic)
        data[at + field:at + field + 4] = struct.pack("<L", 10_000_000_000 % (1 << 32))
    path.write_bytes(bytes(data))


def _huge_header(path):
    """An .npy header claiming a billion images over a few bytes of data."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000, 32, 32, 3), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64)


BAD = {
    "wrong keys": ("s.npz", lambda p: np.savez(p, x=IMAGES, y=LABELS),
                   "{p}: no 'images' array (its arrays: 'x', 'y'); an .npz holds 'images' (uint8 N×H×W×3) and 'labels' "
                   "(one integer class per image), or one array of images"),
    "wrong shape": ("s.npz", lambda p: np.savez(p, images=IMAGES.reshape(6, -1)),
                    "{p} ('images'): an array of shape 6×3072; expected images N×H×W×3 (RGB) or N×H×W (grey)"),
    "four channels": ("s.npy", lambda p: np.save(p, np.zeros((2, 4, 4, 4), np.uint8)),
                      "{p}: an array of shape 2×4×4×4; expected images N×H×W×3 (RGB) or N×H×W (grey)"),
    "no images": ("s.npy", lambda p: np.save(p, np.zeros((0, 4, 4, 3), np.uint8)), "{p}: holds no images (shape 0×4×4×3)"),
    "float pixels": ("s.npz", lambda p: np.savez(p, images=IMAGES.astype(np.float32)),
                     "{p} ('images'): images must be uint8, not float32 (preprocessed tensors?): dnet applies the "
                     "model's own preprocessing, so it takes the pixels before normalisation, 0-255"),
    "length mismatch": ("s.npz", lambda p: np.savez(p, images=IMAGES, labels=LABELS[:5]), "{p}: 5 labels for 6 images"),
    "float labels": ("s.npz", lambda p: np.savez(p, images=IMAGES, labels=LABELS.astype(np.float32)),
                     "{p} ('labels'): labels must be integers, one per image; got float32 6"),
    "negative label": ("s.npz", lambda p: np.savez(p, images=IMAGES, labels=LABELS - 1),
                       "{p} ('labels'): label -1 is negative"),
    "pickle object array": ("s.npz", _object_npz,
                            "{p} ('images'): holds Python objects (a pickle); dnet never unpickles: save uint8 arrays"),
    "a pickle named .npy": ("s.npy", _pickled_npy,
                            "{p}: not a numpy array (no .npy header); dnet reads .npy/.npz arrays and never unpickles"),
    "truncated npy": ("s.npy", _truncated_npy,
                      "{p}: the header claims a 6×32×32×3 uint8 array (18,432 bytes) but only 17,432 bytes follow it "
                      "(truncated?)"),
    "header claims a billion images": ("s.npy", _huge_header,
                                       "{p}: the header claims a 1000000000×32×32×3 uint8 array (3,072,000,000,000 "
                                       "bytes) but only 64 bytes follow it (truncated?)"),
    "zip entry claims more than deflate holds": ("s.npz", _inflated_claim, None),
    "not a zip": ("s.npz", lambda p: p.write_bytes(b"PK\x03\x04 nothing"), None),
}
