"""What a saved model expects of its input (``<run>/model/model.json``), and the refusal to
embed images otherwise: another backbone, other weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fruits_features.config import LabelsConfig, ModelConfig
from fruits_features.errors import ConfigError, InputError
from fruits_features.features.backbones import RESNET50

FORMAT_VERSION = 1


class ModelUnavailableError(InputError):
    """The model folder cannot be read or is not a model this job wrote (exit code 3)."""


class ModelMismatchError(ConfigError):
    """The configuration would embed images differently from the images the model learnt (exit code 2)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a saved pipeline expects of its input, stored beside it as ``model.json``.

    Attributes:
        image_size: images are resized to this square before the backbone.
        weights: ``model.weights`` at training time (where they were then; informational).
        weights_sha256: the digest of the weights file: scoring with other weights is refused.
        feature_dim: the length of the backbone's feature vector.
        k: the PCA components the classifier reads.
        variance_target: ``pca.k`` when it was a variance target, else ``None``.
        labels: the classes, in the classifier's index order.
        run_id: the training run.
        trained_at: UTC time of training.
        spark_version: the Spark that wrote the pipeline.
        backbone: the network that embedded the images (``resnet50`` in files written before the
            choice existed).
        label_rule: how the images' folders became ``labels`` (``labels.rule`` and ``labels.table``;
            the folders themselves in files written before the choice existed): a scoring run
            labels its folders the same way.
        format_version: this layout's version.
    """

    image_size: int
    weights: str
    weights_sha256: str
    feature_dim: int
    k: int
    variance_target: float | None
    labels: tuple[str, ...]
    run_id: str
    trained_at: str
    spark_version: str
    backbone: str = RESNET50.name
    label_rule: LabelsConfig = field(default_factory=LabelsConfig)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["label_rule"] = self.label_rule.model_dump(mode="json")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> ModelInfo:
        """Read ``model.json``'s content.

        Raises:
            ModelUnavailableError: for a missing field or another format version.
        """
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelUnavailableError(
                f"{source}: format_version {data.get('format_version')!r}, this job reads {FORMAT_VERSION}"
            )
        try:
            return cls(
                image_size=int(data["image_size"]),
                weights=str(data["weights"]),
                weights_sha256=str(data["weights_sha256"]),
                feature_dim=int(data["feature_dim"]),
                k=int(data["k"]),
                variance_target=None if data["variance_target"] is None else float(data["variance_target"]),
                labels=tuple(str(label) for label in data["labels"]),
                run_id=str(data["run_id"]),
                trained_at=str(data["trained_at"]),
                spark_version=str(data["spark_version"]),
                backbone=str(data.get("backbone", RESNET50.name)),
                label_rule=LabelsConfig.model_validate(data.get("label_rule") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelUnavailableError(
                f"{source}: not a model description this job wrote ({exc!r})"
            ) from exc


def check_backbone(info: ModelInfo, model: ModelConfig, model_uri: str) -> None:
    """Refuse to embed with another backbone than the model's: checked before any model file is.

    Raises:
        ModelMismatchError: naming both backbones.
    """
    if model.backbone != info.backbone:
        raise ModelMismatchError(
            f"model.backbone={model.backbone}, but the model at {model_uri} was trained on {info.backbone} "
            f"features: {model.network.feature_dim} features against its {info.feature_dim}, with another "
            f"meaning; set model.backbone={info.backbone} (and its weights and ONNX file)"
        )


def check_compatible(info: ModelInfo, model: ModelConfig, digest: str, model_uri: str) -> None:
    """Refuse to embed with another backbone or with weights other than the model's.

    Args:
        info: what the model (or the previous run) embedded with.
        model: this run's model settings.
        digest: the SHA-256 of this run's weights file.
        model_uri: where ``info`` was read, for the message.

    Raises:
        ModelMismatchError: naming both settings.
    """
    check_backbone(info, model, model_uri)
    weights = model.weights
    if digest != info.weights_sha256:
        raise ModelMismatchError(
            f"model.weights={weights} (sha256 {digest[:12]}...) differs from the weights the model at "
            f"{model_uri} was trained with ({info.weights}, sha256 {info.weights_sha256[:12]}...): its "
            "features would mean something else; set model.weights to the same file"
        )
