"""Lua Torch7 ``.t7`` files: a safe binary reader and the DenseNet module-tree mapping."""
