"""`make run`: the job on the bundled sample images, against a local S3 endpoint.

Starts moto's S3 server on 127.0.0.1, uploads tests/data/fruits360-sample/ (or --images DIR, laid
out as <Class>/<file>) to s3://fruits-demo/images/, runs `spark-submit jobs/extract_features.py`
in local mode, prints a summary with the classifier's accuracy, and copies the run's results,
report included, to output/<run id>/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fruits_features.cli import new_run_id, summary_lines
from fruits_features.dev.local_s3 import local_s3
from fruits_features.dev.spark_submit import driver_java_options, job_command, job_env
from fruits_features.io.folders import download_folder, upload_folder
from fruits_features.io.outputs import REPORT_DIR
from fruits_features.io.s3 import s3_client
from fruits_features.io.uri import S3Uri
from fruits_features.reporting.page import INDEX_FILE

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "fruits360-sample"
BUCKET = "fruits-demo"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/local.yaml")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--output-dir", default=str(ROOT / "output"))
    parser.add_argument("--images", default=str(SAMPLE), help="a folder of <Class>/<file> images to upload")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--archive-classes",
        metavar="FILE",
        help="write the driver JVM's class archive to FILE at its exit (make class-archive)",
    )
    args = parser.parse_args()

    overrides = list(args.overrides)
    weights = os.environ.get("FRUITS_WEIGHTS")
    if weights:
        local = Path(weights)
        overrides.append(f"model.weights={local.resolve() if local.exists() else weights}")
    onnx = os.environ.get("FRUITS_ONNX")  # the export `make run` made for the onnxruntime engine
    if onnx:
        overrides.append(f"model.onnx={Path(onnx).resolve()}")

    started = time.perf_counter()
    if args.archive_classes:  # the JVM writes it read-only, and would not replace it
        Path(args.archive_classes).unlink(missing_ok=True)
        Path(args.archive_classes).parent.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id()
    images = S3Uri(BUCKET, "images/")
    features = S3Uri(BUCKET, "features/")
    with local_s3() as endpoint:
        client = s3_client()
        client.create_bucket(Bucket=BUCKET)
        uploaded = upload_folder(client, Path(args.images), images, pattern="*/*")  # <class>/<image>
        print(
            f"local S3 at {endpoint}: uploaded {uploaded} images from {args.images} to {images}", flush=True
        )
        command = job_command(
            "extract_features",
            *("--input", str(images), "--output", str(features), "--run-id", run_id),
            *[arg for item in overrides for arg in ("--set", item)],
            master=args.master,
            config=args.config,
            java_options=driver_java_options(Path(args.archive_classes), dump=True)
            if args.archive_classes
            else None,
        )
        env = job_env()
        print("$ " + " ".join(command), flush=True)
        code = subprocess.call(command, env=env, cwd=ROOT)
        if code != 0:
            print(f"the job failed with exit code {code}", file=sys.stderr)
            return code
        target = Path(args.output_dir) / run_id
        shutil.rmtree(target, ignore_errors=True)
        copied = download_folder(client, features.join(run_id), target)
    manifest = json.loads((target / "manifest.json").read_text())
    print()
    print("\n".join(summary_lines(manifest)))
    print(f"  local copy       {target} ({copied} files)")
    report = target / REPORT_DIR / INDEX_FILE
    if report.is_file():
        print(f"  report (local)   {report}")
    print(f"  make run took    {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
