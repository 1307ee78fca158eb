"""Regenerate the trained test models: ``python -m tests.weights`` (then run the suite: the models change)."""

import torch

from dnet.checkpoint import save_checkpoint
from tests.weights import DIGITS_BASIC, DIGITS_BASIC_CONFIG, DIGITS_BC, DIGITS_BC_CONFIG, train_digits

torch.set_num_threads(2)
for path, config, epochs in ((DIGITS_BC, DIGITS_BC_CONFIG, 4), (DIGITS_BASIC, DIGITS_BASIC_CONFIG, 15)):
    model = train_digits(config, epochs)
    save_checkpoint(path, model, model.meta)
    print(f"{path.name}: {sum(p.numel() for p in model.parameters()):,} parameters, {path.stat().st_size:,} bytes")
