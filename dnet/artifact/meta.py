"""The description every dnet artifact carries: checkpoint metadata, ONNX ``metadata_props``, engine sidecars.

``ArtifactMeta`` is the one contract between converters, engines and ``dnet eval``: an artifact says which
model it is, how many classes it has, how to feed it and where it came from, so no other flag is needed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from dnet.data.specs import PreprocessSpec
from dnet.errors import FileFormatError

PREFIX = "dnet."  # key prefix in ONNX metadata_props


@dataclass(frozen=True)
class ArtifactMeta:
    model: str  # zoo name when the architecture is a zoo entry, else "custom"
    num_classes: int
    input_size: int
    preprocess: PreprocessSpec
    precision: str = "fp32"  # fp32 | fp16 | int8
    source: str = ""  # the file this artifact was made from (name only)
    source_sha256: str = ""
    config: dict = field(default_factory=dict)  # DenseNetConfig.to_dict() when known
    calibration: dict | None = None  # INT8: method, image count, data, cache sha256
    dnet_version: str = ""
    extra: dict = field(default_factory=dict)  # anything else a step wants to record

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ArtifactMeta:
        try:
            d = dict(d)
            d["preprocess"] = PreprocessSpec.from_dict(d["preprocess"])
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError, ValueError) as e:
            raise FileFormatError(f"artifact metadata is incomplete or malformed: {e}") from None

    def to_strings(self) -> dict[str, str]:
        """Flat string pairs for ONNX ``metadata_props`` (JSON for structured values)."""
        return {PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_strings(cls, props: dict[str, str]) -> ArtifactMeta | None:
        """Inverse of :meth:`to_strings`; None when the props hold no dnet metadata at all."""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not ours:
            return None
        try:
            return cls.from_dict({k: json.loads(v) for k, v in ours.items()})
        except json.JSONDecodeError as e:
            raise FileFormatError(f"artifact metadata is not valid JSON: {e}") from None
