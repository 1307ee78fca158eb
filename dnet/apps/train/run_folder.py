"""A run folder: ``config.json``, ``metrics.csv``, ``curves.png``, ``last.pth`` and ``best.pth``, each written atomically.

Only rank 0 writes; every file is complete under its final name or absent.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import time
from pathlib import Path

from dnet.apps.train.recipe import TrainConfig
from dnet.core.atomic import atomic_write_text
from dnet.core.errors import DnetError, FileFormatError, UsageError

CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
LAST = "last.pth"
BEST = "best.pth"
LOCK = ".dnet-train.lock"  # held by the running train (run_lock); removed when it ends
METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "time_s", "img_per_s")
VAL_FIELDS = ("val_loss", "val_error")  # runs that hold a validation split out of training (SVHN)


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.model if cfg.model != "custom" else f"densenet{'-bc' if cfg.bc in (None, True) else ''}-l{cfg.depth}"
    return Path("runs") / f"{cfg.dataset}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_writable(run_dir: Path) -> None:
    """Create the run folder (and parents) or say in one line why it cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DnetError(f"cannot create run folder {run_dir}: {e.strerror or e}") from None
    if not run_dir.is_dir():
        raise DnetError(f"run folder {run_dir} exists and is not a folder")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise DnetError(f"cannot write to run folder {run_dir}: permission denied; choose another --output")


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on the run folder for the run's life; a second ``train`` or ``--resume`` of it is refused.

    The lock is ``flock`` on a file in the folder (:data:`LOCK`), not on the folder itself: on NFS an exclusive
    ``flock`` is an fcntl lock, which needs a descriptor open for writing, and a folder cannot be opened so (EBADF:
    no run could start there). The kernel drops the lock when the process ends, however it ends (SIGKILL included);
    the file is removed when the run ends (a SIGKILL leaves it, unlocked, and the next run takes it over).
    """
    path = run_dir / LOCK
    for _ in range(10):  # the file may be removed by a run ending between our open and our flock: open it again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise DnetError(f"cannot lock run folder {run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DnetError(f"cannot lock run folder {run_dir}: {e.strerror or e}") from None
            raise busy(run_dir) from None
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # we locked a file that is no longer the folder's lock
    else:
        raise busy(run_dir)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: a run waiting on this file opens it again (above)
        os.close(fd)


def busy(run_dir: Path) -> UsageError:
    """What a second ``train`` or ``--resume`` of a folder in use is told."""
    return UsageError(f"run folder {run_dir} is in use by another dnet train (or --resume) still running; "
                      "wait for it to end or choose another --output")


def in_use(run_dir: Path) -> bool:
    """Whether a running ``train`` holds the folder's lock (a shared lock on its file is refused)."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)


def stopped_early(run_dir: str | os.PathLike) -> UsageError:
    """What ``--resume`` says of a run interrupted before its first checkpoint (its folder empty, or config.json only)."""
    return UsageError(f"the run in {run_dir} was stopped before its first checkpoint: nothing to resume; start it again")


def read_run_config(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict]:
    """The configuration a run folder was trained with, and the whole ``config.json``."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_JSON
    if not path.exists() and run_dir.is_dir() and not any(p.name != LOCK for p in run_dir.iterdir()):
        raise stopped_early(run_dir)  # made, then interrupted before it wrote anything
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: no {CONFIG_JSON} there; is it a dnet run folder?")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return TrainConfig.from_dict(doc["train"]), doc
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FileFormatError(f"{path}: not a dnet run configuration ({e})") from None


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    fields = METRIC_FIELDS + tuple(k for k in VAL_FIELDS if history and k in history[0])
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in fields})
    atomic_write_text(run_dir / METRICS_CSV, buf.getvalue())


def write_config(run_dir: Path, doc: dict) -> None:
    atomic_write_text(run_dir / CONFIG_JSON, json.dumps(doc, indent=2) + "\n")


__all__ = ["BEST", "CONFIG_JSON", "CURVES_PNG", "LAST", "METRICS_CSV", "METRIC_FIELDS", "check_writable",
           "default_run_dir", "run_lock", "read_run_config", "write_config", "write_metrics"]
