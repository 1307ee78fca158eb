"""Data sets (``datasets``), image decoding (``images``), preprocessing (``specs``, ``transforms``), downloads.

The package itself imports nothing, so ``dnet.data.specs`` (a description every artifact carries) stays light.
"""
