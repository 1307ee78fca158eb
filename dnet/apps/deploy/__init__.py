"""Deploying dnet files to serving systems (L3): a Triton model repository (``triton``) and a live Triton server
(``serve``)."""
