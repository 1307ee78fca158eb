"""What every dnet artifact says about itself (L0): the metadata, the ONNX file that carries it, the engine sidecar.

``ArtifactMeta`` is the one contract between converters, engines and ``dnet eval``; ``onnxfile`` reads and writes
it in ONNX ``metadata_props``; ``sidecar`` is the ``NAME.plan.json`` beside a TensorRT plan and the policy of which
TensorRT version and GPU may run it; ``layers`` the plan's layer information (``NAME.plan.layers.json``).
"""

from dnet.core.artifact.meta import PREFIX, ArtifactMeta

__all__ = ["PREFIX", "ArtifactMeta"]
