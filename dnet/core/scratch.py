"""Private scratch folders, and the caches libraries would otherwise leave in the temporary folder.

Every scratch folder lives in one root, ``$TMPDIR/dnet-scratch-UID``, is removed when its step ends, fails or is
interrupted, and what a killed process left there is swept when the next one is made.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dnet.core.errors import DnetError
from dnet.core.ownership import SCRATCH, _tag, sweep_stale
from dnet.core.write_errors import FULL_ERRNOS, file_size_limit, free_bytes, os_cause


def scratch_root() -> Path:
    """The one folder dnet keeps scratch folders in: ``$TMPDIR/dnet-scratch-UID`` (private to the user)."""
    return Path(tempfile.gettempdir()) / f"{SCRATCH}-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


@contextlib.contextmanager
def scratch_folder(purpose: str) -> Iterator[Path]:
    """A private folder for scratch files (e.g. calibration's model copies), removed when the block ends.

    It lives in :func:`scratch_root`; folders of processes that were killed are swept when the next one is made,
    and the root itself is removed when it is left empty.
    """
    root = scratch_root()
    for _ in range(3):  # another process may remove the empty root between our mkdir and mkdtemp
        root.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            raise DnetError(f"scratch folder {root} is not a folder of this user; remove it or set TMPDIR")
        sweep_stale(root)
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"{purpose}{_tag(SCRATCH)}", dir=root))
            break
        except FileNotFoundError:
            continue
    else:
        raise DnetError(f"cannot create a scratch folder in {root}")
    try:
        yield folder
    except DnetError:  # already said in one line (an output's own full disk inside a verb's scratch, say)
        raise
    except Exception as e:
        cause = os_cause(e)
        if cause is not None and cause.errno in FULL_ERRNOS:
            raise DnetError(f"no space left on device for scratch files in {root}: "
                            f"{free_bytes(root) or 0:,} bytes are free; set TMPDIR to a folder with more space") from None
        if cause is not None and cause.errno == errno.EFBIG:
            raise DnetError(f"file too large: a scratch file in {root} reached the size limit of "
                            f"{file_size_limit() or 0:,} bytes (ulimit -f); raise the limit") from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()


# Caches libraries write into the temporary folder unless told otherwise: PyTorch's inductor/dynamo cache
# (``$TMPDIR/torchinductor_USER``, made when ``torch._dynamo`` is imported: every export, every training step) and
# Triton's beneath it. ONNX Runtime (CPU) and OpenVINO write none unless given a cache folder; TensorRT's are dnet's.
LIBRARY_CACHES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


@contextlib.contextmanager
def library_caches() -> Iterator[Path | None]:
    """Point the libraries' caches into a scratch folder of this process for the block, then remove it.

    What a user set (any of :data:`LIBRARY_CACHES` in the environment) is left alone: their cache, their choice.
    """
    if any(name in os.environ for name in LIBRARY_CACHES):
        yield None
        return
    with scratch_folder("caches") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "torchinductor")
        os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
        try:
            yield folder
        finally:
            for name in LIBRARY_CACHES:  # torch writes its own choice back into the environment: remove both
                os.environ.pop(name, None)
