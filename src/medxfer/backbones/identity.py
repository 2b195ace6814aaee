"""What a backbone is, as far as the features it computes go: one type, compared one way.

The feature cache (manifest.json), the model folder (model.json), the ONNX metadata, the
studies and concatenated feature sets all record a :class:`BackboneIdentity` (as a dict in
their JSON) and compare two of them with :meth:`BackboneIdentity.differences`, which
descends into every member of a concatenation: features made with other weights for any
member are never taken for the model's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneIdentity:
    """Everything about a backbone that changes its features.

    ``members`` are the identities of a concatenation's backbones ("a+b"), in order; its
    own ``weights_sha256`` is None (each member has its own).
    """

    name: str
    weights_sha256: str | None = None
    pooling: str | None = None
    feature_dim: int | None = None
    preprocessing: dict | None = None
    finetuned_sha256: str | None = None
    members: tuple["BackboneIdentity", ...] = ()

    #: The fields compared by :meth:`differences`, in the order they are reported.
    COMPARED = ("name", "weights_sha256", "pooling", "feature_dim", "preprocessing",
                "finetuned_sha256")

    @classmethod
    def from_dict(cls, d: "dict | BackboneIdentity | None") -> "BackboneIdentity":
        """From the dict form of a manifest or model.json (missing keys stay None)."""
        if isinstance(d, BackboneIdentity):
            return d
        d = d or {}
        return cls(name=str(d.get("name") or ""), weights_sha256=d.get("weights_sha256"),
                   pooling=d.get("pooling"),
                   feature_dim=None if d.get("feature_dim") is None else int(d["feature_dim"]),
                   preprocessing=d.get("preprocessing"), finetuned_sha256=d.get("finetuned_sha256"),
                   members=tuple(cls.from_dict(m) for m in d.get("members") or ()))

    def as_dict(self) -> dict:
        """The JSON form (the keys medxfer has always written; finetuned_sha256 and members
        only when set)."""
        out = {"name": self.name, "weights_sha256": self.weights_sha256, "pooling": self.pooling,
               "feature_dim": self.feature_dim, "preprocessing": self.preprocessing}
        if self.finetuned_sha256:
            out["finetuned_sha256"] = self.finetuned_sha256
        if self.members:
            out["members"] = [m.as_dict() for m in self.members]
        return out

    @property
    def label(self) -> str:
        """A short human name: 'efficientnet_lite2+mobilenet_v2 (multistage, 260 px)'."""
        size = (self.preprocessing or {}).get("size")
        extra = [x for x in (self.pooling, f"{size} px" if size else None,
                             "fine-tuned" if self.finetuned_sha256 else None) if x]
        return f"{self.name} ({', '.join(extra)})" if extra else self.name

    @property
    def weights_hashes(self) -> dict[str, str | None]:
        """{backbone name: weights sha256} of this backbone or of every member."""
        if self.members:
            return {k: v for m in self.members for k, v in m.weights_hashes.items()}
        return {self.name: self.weights_sha256}

    def differences(self, other: "BackboneIdentity | dict") -> list[str]:
        """What differs between ``self`` and ``other``, one phrase each, members included
        (e.g. "weights_sha256 of member 'mobilenet_v2'"); empty when they are the same."""
        other = BackboneIdentity.from_dict(other)
        out = [k for k in self.COMPARED if getattr(self, k) != getattr(other, k)]
        if len(self.members) != len(other.members):
            out.append(f"members ({len(self.members)} against {len(other.members)})")
            return out
        for a, b in zip(self.members, other.members):
            out += [f"{d} of member '{a.name}'" for d in a.differences(b)]
        return out
