"""What a PyTorch file looks like from its first bytes, without torch: the sniff that lets any suffix through."""

from __future__ import annotations

import os

ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy format starts with a pickle of protocol 2 (a magic number); pickles of 2..5 are accepted
PICKLE_PROTOCOLS = range(2, 6)


def looks_like_pth(path: str | os.PathLike) -> bool:
    """Whether a file starts as torch.save's files do (a zip archive, or a pickle of protocol 2 to 5), whatever its
    suffix; what it holds is checked when it is read (``dnet.formats.checkpoint.read_pth``)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == ZIP_MAGIC or (len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS)
