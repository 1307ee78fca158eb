"""The trained test model in this folder (digits-bc.pth), and how it was made: ``python -m tests.weights``
regenerates it; its configuration and the trainer are ``tests.helpers.models``.

The tests load this file instead of training during the test run: a float result depends on the CPU's kernels
(AVX2 and AVX-512 machines train different models from one seed), so a model trained in the run would make its
accuracy, and every count derived from it, a property of the machine. Fixed weights make them a property of the file.
Regenerating changes the model: run the suite after it.
"""
