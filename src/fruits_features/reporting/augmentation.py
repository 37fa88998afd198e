"""The report's augmented examples (``augment.copies``): an image's copies as the executors made them,
and the sentence that says which steps were on. Pure: numpy and the augmentation itself, no Spark,
no S3."""

from __future__ import annotations

import numpy as np

from fruits_features.features.augment import AugmentSpec, augment_image
from fruits_features.reporting.inputs import AugmentedExample

# A few images, a few copies each: the figure is a glance at what the model was taught, and each
# image is one GET and one decode on the driver.
EXAMPLE_CLASSES = 4
EXAMPLE_COPIES = 3
# The steps of :func:`~fruits_features.features.augment.augment_image` by their keys in the
# ``augment`` section.
STEPS = ("background", "texture", "several", "scale", "cut", "shadow", "light", "colour", "equalize", "blur",
         "noise", "jpeg")  # fmt: skip


def augmented_example(
    label: str, path: str, original: np.ndarray, spec: AugmentSpec, copies: int = EXAMPLE_COPIES
) -> AugmentedExample:
    """``original`` beside its copies 1 .. ``min(copies, spec.copies)``.

    Each copy is :func:`~fruits_features.features.augment.augment_image` of the same pixels, spec,
    path and copy number as on the executors, so the report shows the very pixels the model saw.

    Args:
        label: the image's class.
        path: the image's ``s3://`` path exactly as the job's ``path`` column holds it.
        original: the image decoded at ``model.image_size``, uint8 ``(s, s, 3)``.
        spec: the ``augment`` section's spec.
        copies: at most this many copies.

    Returns:
        The example, its copies in order.
    """
    made = tuple(augment_image(original, spec, path, copy) for copy in range(1, min(copies, spec.copies) + 1))
    return AugmentedExample(label=label, path=path, original=original, copies=made)


def _step(spec: AugmentSpec, name: str) -> str:
    details = {
        "scale": f"to {100 * spec.min_scale:g}-100% of the frame",
        "cut": f"up to {100 * spec.cut_fraction:g}% out of the frame",
        "colour": f"±{100 * spec.colour_strength:g}%",
        "blur": f"radius up to {spec.blur_radius:g} px",
        "noise": f"sigma {spec.noise_sigma:g} grey levels",
        "jpeg": f"quality {spec.jpeg_quality}-95",
    }
    probability = f"{name} {getattr(spec, name):g}"
    return f"{probability} ({details[name]})" if name in details else probability


def describe_augmentation(spec: AugmentSpec) -> str:
    """One sentence: the copies per image, the seed, and the steps that were on with their
    probabilities (plain text; the page escapes it)."""
    copies = "1 augmented copy" if spec.copies == 1 else f"{spec.copies} augmented copies"
    on = [_step(spec, name) for name in STEPS if getattr(spec, name) > 0]
    if on:
        steps = "with these steps on, each taken with its probability: " + ", ".join(on)
    else:
        steps = "with every step off (each copy equals its original)"
    return f"Each image was embedded with {copies} (augment.seed {spec.seed}), {steps}."
