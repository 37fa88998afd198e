"""Export ResNet50 to ONNX for the onnxruntime engine, verified against Keras on sample images.

    python jobs/export_onnx.py --config conf/local.yaml [--samples DIR_OR_S3_PREFIX] [--count 16] \
        [--set model.weights=...] [--set model.image_size=224] [--set model.onnx=...]

Exports Keras' ResNet50 (no top, average pooling) with model.weights at model.image_size to
model.onnx (default: next to the weights, <stem>.<size>px.onnx), a local path or an s3:// URI.
The file is written only when its features equal Keras' on the sample images (default: the
first images of input.uri, spread over the classes) within 1e-4. Needs the `export` extra
(TensorFlow, tf2onnx, onnx); the job that runs the file needs only onnxruntime.

Exit codes: 0 written; 1 the export differs from Keras; 2 bad configuration or arguments;
3 the weights or the sample images cannot be had; 4 the target cannot be written.
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
from fruits_features.features.onnx_export import export_onnx, load_samples
from fruits_features.settings import s3_settings

log = logging.getLogger("export_onnx")


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        args = build_export_parser().parse_args(argv)
        config = load_config(Path(args.config), overrides=args.overrides)
        settings = s3_settings(config)
        model = config.model
        check_weights(model.weights, settings)
        source = args.samples or config.input.uri
        samples = load_samples(source, args.count, model.image_size, settings, config.input.extensions)
        target = model.onnx_location()
        info = export_onnx(model.weights, model.image_size, target, samples, settings)
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code
    log.info("wrote %s: %s", target, json.dumps(asdict(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
