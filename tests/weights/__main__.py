"""Regenerate the trained test model: ``python -m tests.weights`` (then run the suite: the model changes)."""

import torch

from dnet.formats.checkpoint import save_checkpoint
from tests.helpers.models import DIGITS_BC, train_digits

torch.set_num_threads(2)
model = train_digits()
save_checkpoint(DIGITS_BC, model, model.meta)
print(f"{DIGITS_BC.name}: {sum(p.numel() for p in model.parameters()):,} parameters, {DIGITS_BC.stat().st_size:,} bytes")
