"""Spark job: score new S3 images with a model saved by a training run (classifier.enabled).

    spark-submit jobs/score.py --config conf/local.yaml --model s3://BUCKET/PREFIX/<run id>/model/ \
        [--input s3://BUCKET/NEW/] [--output s3://BUCKET/SCORES/] [--run-id ID] \
        [--set section.key=value ...]

Writes <output>/<run id>/predictions/part-*.csv (path,label,predicted,probability), rejected/,
manifest.json and _SUCCESS. The images are embedded at the model's image size; model.weights must
be the same weights file the model was trained with.

Exit codes: 0 done; 1 the run failed; 2 bad configuration or arguments, or weights other than the
model's; 3 the input, the weights or the model cannot be had; 4 the output cannot be written or
the run id is already used; 5 more images were rejected than max_rejected_fraction allows.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from fruits_features import scoring
from fruits_features.cli import (
    build_score_parser,
    build_session,
    check_run_id,
    config_overrides,
    configure_logging,
    new_run_id,
    score_summary_lines,
)
from fruits_features.config_files import load_config
from fruits_features.errors import FruitsFeaturesError

log = logging.getLogger("score")


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        args = build_score_parser().parse_args(argv)
        config = load_config(
            Path(args.config), input_uri=args.input, output_uri=args.output, overrides=config_overrides(args)
        )
        run_id = check_run_id(args.run_id or new_run_id())
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code

    spark = build_session(config)
    try:
        result = scoring.run_scoring(spark, config, args.model, run_id)
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code
    finally:
        spark.stop()
    for line in score_summary_lines(result.manifest):
        log.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
