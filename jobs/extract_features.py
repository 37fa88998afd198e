"""Spark job: S3 images -> ResNet50 features -> StandardScaler + PCA -> labelled CSV on S3.

    spark-submit jobs/extract_features.py --config conf/local.yaml \
        [--input s3://BUCKET/PREFIX/] [--output s3://BUCKET/PREFIX/] [--run-id ID] \
        [--set section.key=value ...]

Exit codes: 0 done; 1 the run failed; 2 bad configuration or arguments; 3 the input or the
model weights cannot be had; 4 the output cannot be written or the run id is already used;
5 more images were rejected than max_rejected_fraction allows.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from fruits_features import pipeline
from fruits_features.cli import (
    build_parser,
    build_session,
    check_run_id,
    config_overrides,
    configure_logging,
    new_run_id,
    summary_lines,
)
from fruits_features.config_files import load_config
from fruits_features.errors import FruitsFeaturesError

log = logging.getLogger("extract_features")


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        args = build_parser().parse_args(argv)
        config = load_config(
            Path(args.config), input_uri=args.input, output_uri=args.output, overrides=config_overrides(args)
        )
        run_id = check_run_id(args.run_id or new_run_id())
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code

    spark = build_session(config)
    try:
        result = pipeline.run(spark, config, run_id)
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code
    finally:
        spark.stop()
    for line in summary_lines(result.manifest):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
