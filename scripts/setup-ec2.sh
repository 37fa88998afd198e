#!/usr/bin/env bash
# Prepare a fresh Ubuntu EC2 instance (22.04 or 24.04; a t2.xlarge: 4 vCPU, 16 GiB) to run the job
# with spark-submit in local mode. Run it from a checkout of this repository:
#
#   scripts/setup-ec2.sh [--engine onnxruntime|tensorflow|openvino|auto] [--venv /opt/fruits-features/venv] [--dry-run]
#
# --engine is the job's model.engine (default auto, as in conf/ec2.yaml); it chooses what the venv
# holds: onnxruntime installs the project's own dependencies (ONNX Runtime among them, no TensorFlow
# or Keras); auto and openvino add the `openvino` extra (OpenVINO bf16 where the CPU has AMX,
# ONNX Runtime elsewhere); tensorflow adds the `tensorflow` extra (TensorFlow and Keras).
#
# 1. installs Java 17 (Spark's JVM) and Python 3.11 or newer with venv, from Ubuntu's archive
#    (python3 on 24.04; python3.11 from universe on 22.04, whose python3 is 3.10);
# 2. creates the venv and installs the project for the engine with every dependency pinned by
#    constraints.txt (pyspark included: local mode runs the Spark that comes with it);
# 3. checks that the job's libraries import, and prints the spark-submit command to run.
#
# It uses sudo when not run as root. S3 is reached with the instance profile's credentials: no keys
# on the machine. --dry-run prints every command it would run (`+ command`) and runs none.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="/opt/fruits-features/venv"
engine="auto"
dry_run=0

die() {
  echo "setup-ec2: error: $*" >&2
  exit 1
}

while (($#)); do
  case "$1" in
  --venv | --engine)
    (($# >= 2)) || die "$1 needs a value"
    if [[ $1 == --venv ]]; then venv=$2; else engine=$2; fi
    shift 2
    ;;
  --dry-run)
    dry_run=1
    shift
    ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $venv == /* ]] || die "--venv must be an absolute path, got '$venv'"
case "$engine" in
onnxruntime)
  project=$root
  libraries="fruits_features, onnxruntime, pyspark"
  engine_args=" --set model.engine=onnxruntime"
  ;;
tensorflow)
  project="${root}[tensorflow]" # the extra: TensorFlow and Keras
  libraries="fruits_features, onnxruntime, pyspark, keras, tensorflow"
  engine_args=" --set model.engine=tensorflow"
  ;;
openvino | auto)
  project="${root}[openvino]" # the extra: OpenVINO, beside ONNX Runtime
  libraries="fruits_features, onnxruntime, openvino, pyspark"
  engine_args=""
  [[ $engine == auto ]] || engine_args=" --set model.engine=$engine"
  ;;
*) die "--engine must be onnxruntime, tensorflow, openvino or auto, got '$engine'" ;;
esac
[[ -f $root/constraints.txt && -f $root/pyproject.toml ]] || die "run me from a checkout of the repository"

run() {
  if ((dry_run)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  as_root=(sudo)
fi

new_enough() { command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; }

run "${as_root[@]}" apt-get update -q
# libopenblas0-pthread: a native LAPACK for Spark ML's PCA (its 2048x2048 SVD takes seconds, not ~25 s).
run "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  openjdk-17-jre-headless python3 python3-venv libopenblas0-pthread
python=python3
if ! new_enough python3; then # Ubuntu 22.04: python3 is 3.10
  python=python3.11
  run "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11 python3.11-venv
fi

run "${as_root[@]}" "$python" -m venv "$venv"
run "${as_root[@]}" "$venv/bin/python" -m pip install --quiet --no-input -c "$root/constraints.txt" "$project"
if ((!dry_run)); then
  "$root/scripts/setup-system.sh" --python "$venv/bin/python" run
  "$venv/bin/python" -c "import $libraries" ||
    die "the environment $venv cannot import the job's libraries ($libraries)"
fi

if ((dry_run)); then
  echo "setup-ec2: dry run, nothing was installed. Once installed ($engine engine), run the job with:"
else
  echo "setup-ec2: ready ($engine engine). Run the job (4 local cores, 4 GiB for the driver JVM; see conf/ec2.yaml):"
fi
cat <<EOF

  cd $root
  PYSPARK_PYTHON=$venv/bin/python $venv/bin/spark-submit --master 'local[4,4]' --driver-memory 4g \\
      --driver-java-options -XX:TieredStopAtLevel=1 jobs/extract_features.py --config conf/ec2.yaml \\
      --input s3://BUCKET/fruits-360/Training/ --output s3://BUCKET/features/$engine_args
EOF
