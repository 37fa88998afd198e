"""`make bench*`: the benchmarks of fruits_features.dev.bench, one subcommand each.

`run` (make bench), `knobs`, `image-size`, `progress`, `output-format`, `precision`, `robustness`,
`scale`; each writes JSON under bench/results/ and prints a table (see the package's docstring for
what each measures). `_ceilings` and `_scale_driver` are run by the benchmarks themselves, in processes of
their own.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from fruits_features.dev.bench.ceilings import CEILINGS_COMMAND, measure_ceilings
from fruits_features.dev.bench.harness import BACKBONES, CORES, DEV_DATA, ENGINES
from fruits_features.dev.bench.headline import cmd_run
from fruits_features.dev.bench.image_size import cmd_image_size
from fruits_features.dev.bench.knobs import cmd_knobs
from fruits_features.dev.bench.output_format import cmd_output_format
from fruits_features.dev.bench.precision import cmd_precision
from fruits_features.dev.bench.progress_lines import cmd_progress
from fruits_features.dev.bench.robustness import cmd_robustness
from fruits_features.dev.bench.scale import SCALE_DRIVER, cmd_scale, scale_driver

JOB_BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "run": cmd_run,
    "knobs": cmd_knobs,
    "image-size": cmd_image_size,
    "progress": cmd_progress,
    "output-format": cmd_output_format,
    "precision": cmd_precision,
    "robustness": cmd_robustness,
    CEILINGS_COMMAND: measure_ceilings,
}


def sizes(text: str) -> list[int]:
    """``"250,4000"`` -> ``[250, 4000]``."""
    return [int(v) for v in text.split(",") if v]


def latency_bounds(text: str) -> tuple[float, float]:
    """``20-50`` -> (20.0, 50.0); ``0`` -> (0.0, 0.0)."""
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def build_parser() -> argparse.ArgumentParser:
    """The subcommands and their options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in JOB_BENCHMARKS.items():
        p = sub.add_parser(name)
        p.set_defaults(handler=command)
        p.add_argument("--n", type=int, default=1000)
        p.add_argument(
            "--image-size", type=int, default=0, help="0: the backbone's own (224 ResNet50, 260 Lite2)"
        )
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--threads", type=int, default=CORES)
        p.add_argument("--master", default=f"local[{CORES}]")
        p.add_argument("--data", type=Path, default=DEV_DATA)
        p.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS") or "imagenet")
        p.add_argument("--scaling", type=sizes, default=[250, 4000])
        p.add_argument(
            "--engines",
            type=lambda s: [v for v in s.split(",") if v],
            default=list(ENGINES),
            help="comma-separated; knobs and image-size use the first",
        )
        p.add_argument(
            "--backbones",
            type=lambda s: [v for v in s.split(",") if v],
            default=list(BACKBONES),
            help="comma-separated model.backbone values; each runs on the engines it supports",
        )
        p.add_argument(
            "--sizes",
            type=lambda s: [int(v) for v in s.split(",") if v],
            default=[],
            help="image-size: the sizes compared (default: 224,100 for ResNet50, 260,224 for Lite2)",
        )
        p.add_argument(
            "--s3-latency",
            type=latency_bounds,
            default=(20.0, 50.0),
            help="run: each object GET from the local S3 server waits LOW-HIGH ms, as S3's do (0: none)",
        )
        p.add_argument(
            "--knobs",
            type=lambda s: [v.strip() for v in s.split(",") if v.strip()],
            default=[],
            help="knobs: only these (comma-separated names, e.g. 'threads x task.cpus'); default all",
        )
        p.add_argument("--onnx", help="the ONNX file (_ceilings only)")
        p.add_argument("--objects", help="an s3:// prefix whose GETs to time (_ceilings only)")
        p.add_argument("--pairs", type=int, default=3, help="progress: on/off pairs")
        p.add_argument(
            "--copies",
            type=sizes,
            default=[0, 1],
            help="robustness: the augment.copies values compared (0: augmentation off)",
        )
        p.add_argument(
            "--variants",
            type=lambda s: [v.strip() for v in s.split(";")],
            default=[""],
            help="robustness: ';'-separated settings compared beside --copies, each space-separated "
            "section.key=value overrides of the feature job (e.g. 'labels.rule=fruit "
            "classifier.class_weight=none;labels.rule=fruit'); '' the defaults",
        )
        p.add_argument(
            "--fruits",
            type=lambda s: [v.strip() for v in s.split(",") if v.strip()],
            default=[],
            help="robustness: only the dev classes whose first word is one of these (Apple,Banana,Orange)",
        )
        p.add_argument(
            "--results", default="", help="robustness: bench/results/<this>.json (default robustness)"
        )
    p = sub.add_parser("scale", help="listing and partitioning at 10k-1M keys on a standalone cluster")
    p.set_defaults(handler=cmd_scale)
    p.add_argument("--keys", type=sizes, default=[10_000, 100_000, 1_000_000])
    p.add_argument(
        "--sequential", type=sizes, default=[10_000, 100_000], help="sizes also listed by the driver"
    )
    p.add_argument("--partitions", type=int, default=0, help="spark.partitions (0: the job's choice)")
    p.add_argument(
        "--wide-partitions",
        type=int,
        default=5120,
        help="one more inventory run at the largest size with this spark.partitions (0: none)",
    )
    p.add_argument("--driver-memory", default="1g")
    p.add_argument("--executor-memory", default="1g")
    p.add_argument("--worker-memory", default="2g")
    p = sub.add_parser(SCALE_DRIVER)
    p.set_defaults(handler=scale_driver)
    p.add_argument("--mode", required=True, choices=["inventory", "key_list", "sequential"])
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--source")
    p.add_argument("--partitions", type=int, default=0)
    parser.set_defaults(weights="imagenet")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.weights != "imagenet" and Path(args.weights).exists():
        args.weights = str(Path(args.weights).resolve())
    args.handler(args)


if __name__ == "__main__":
    main()
