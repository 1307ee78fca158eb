"""The benchmark's inputs: the real DenseNet-BC-100 as FP32 ONNX and the CIFAR-10 images, preprocessed once.

    python -m benchmarks.peers.prepare DIR        # writes DIR/bc100.onnx, DIR/bc100.calib.npy, DIR/calib/*.png

Every tool gets the same input: images 500-999 of the fixture calibrate (as float32 N×3×32×32 for the peers, as
lossless PNGs for ``dnet convert --calib``), images 0-499 measure. Preprocessing: RGB/255, mean (125.3, 123.0,
113.9)/255, std (63.0, 62.1, 66.7)/255 (the fixture README).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "real"
CHECKPOINT = REAL / "densenet-bc-l100-k12-cifar10.andreasveit.pth.tar"
IMAGES = REAL / "cifar10-test-first1000.npz"
MEAN, STD = np.array([125.3, 123.0, 113.9]) / 255, np.array([63.0, 62.1, 66.7]) / 255
CALIB, MEASURE = slice(500, 1000), slice(0, 500)
_LAYER = {"bn1": "norm1", "conv1": "conv1", "bn2": "norm2", "conv2": "conv2"}
_TOP = {"conv1": "features.conv0", "bn1": "features.norm5", "fc": "classifier"}


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 N×32×32×3 RGB as the checkpoint was trained on, float32 N×3×32×32."""
    return ((images.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


def veit_to_torchvision_keys(sd: dict) -> dict:
    """Fallback for a dnet whose ``--from pth`` does not read Andreas Veit's key layout: the same tensors under
    torchvision's names (dnet's zoo has this CIFAR stem: densenet-bc-l100-k12). Concatenation order is the same."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        if m := re.fullmatch(r"block(\d+)\.layer\.(\d+)\.(bn1|conv1|bn2|conv2)\.(.+)", key):
            out[f"features.denseblock{m[1]}.denselayer{int(m[2]) + 1}.{_LAYER[m[3]]}.{m[4]}"] = value
        elif m := re.fullmatch(r"trans(\d+)\.(bn1|conv1)\.(.+)", key):
            out[f"features.transition{m[1]}.{'norm' if m[2] == 'bn1' else 'conv'}.{m[3]}"] = value
        elif m := re.fullmatch(r"(conv1|bn1|fc)\.(.+)", key):
            out[f"{_TOP[m[1]]}.{m[2]}"] = value
        else:
            raise KeyError(f"not an Andreas Veit DenseNet key: {key}")
    return out


def dnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnet", *args], capture_output=True, text=True)


def fp32_onnx(folder: Path) -> dict:
    """bc100.onnx by ``dnet convert --from pth`` on the checkpoint itself, else through the key-mapping fallback."""
    out = folder / "bc100.onnx"
    direct = dnet("convert", str(CHECKPOINT), "--from", "pth", "--to", "onnx", "-o", str(out), "--force")
    if direct.returncode == 0:
        return {"route": "dnet convert --from pth (Veit keys read directly)"}
    import torch

    ck = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    mapped = folder / "bc100.torchvision-keys.pth"
    torch.save(veit_to_torchvision_keys(ck["state_dict"]), mapped)
    done = dnet("convert", str(mapped), "--from", "pth", "--to", "onnx", "-o", str(out), "--force")
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return {"route": "fallback veit_to_torchvision_keys, then dnet convert --from pth",
            "direct_error": direct.stderr.strip().splitlines()[-1]}


def main() -> None:
    from PIL import Image

    folder = Path(sys.argv[1])
    (folder / "calib").mkdir(parents=True, exist_ok=True)
    data = np.load(IMAGES)
    np.save(folder / "bc100.calib.npy", preprocess(data["images"][CALIB]))
    for i in range(CALIB.start, CALIB.stop):
        Image.fromarray(data["images"][i]).save(folder / "calib" / f"{i:04d}.png")
    print(fp32_onnx(folder))


if __name__ == "__main__":
    main()
