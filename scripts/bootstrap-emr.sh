#!/usr/bin/env bash
# EMR bootstrap action: runs once on every node before Spark starts (as the hadoop user).
#
#   bootstrap-emr.sh --artifacts s3://BUCKET/PREFIX/<tag>/ [--engine onnxruntime|tensorflow|openvino|auto]
#                    [--environment environment-<engine>.tar.gz]
#                    [--venv /opt/fruits-features/venv] [--python python3.11]
#                    [--weights s3://.../w.h5 --weights-path /opt/.../w.h5] [--pyproject FILE] [--dry-run]
#
# --engine is the job's model.engine (default onnxruntime); it chooses what the node installs:
#   onnxruntime  requirements-emr-onnxruntime.txt: the project's own dependencies, ONNX Runtime
#                among them; no TensorFlow or Keras. The driver fetches the model files (the
#                weights, to check the ONNX file's origin, and the ONNX file) from S3 itself, and
#                each node's executors download the ONNX file once; --weights is refused.
#   tensorflow   requirements-emr-tensorflow.txt: the same plus TensorFlow and Keras (the
#                project's `tensorflow` extra); --weights copies the weights to this node.
#
# 1. fetches the engine's requirements file, constraints.txt and the wheel (and with --environment
#    the packed environment) from the artifacts folder that `make package` built and the submit
#    command uploaded, checked against its SHA256SUMS;
# 2. installs python3.11 from the Amazon Linux 2023 repository when missing (EMR 7's python3 is
#    3.9; the project and its pins need 3.11; python3 itself must stay, dnf needs it);
# 3. with --environment: unpacks the packed environment (`make package`: the engine's pins
#    installed hash-checked, and the wheel; its interpreter is /usr/bin/python3.11) as the venv;
#    nothing is fetched from PyPI. Without it: creates a venv and installs the pinned requirements
#    from PyPI, then the wheel without dependencies. Either way the nodes' Spark is EMR's own:
#    pyspark is not installed;
# 4. with --engine tensorflow and --weights, copies the model weights from S3 once to a local
#    path on this node;
# 5. checks the pins before installing anything else: each equals constraints.txt, and every
#    dependency the wheel (and pyproject.toml, with --pyproject) declares for the engine, its
#    extra included, is pinned inside its range; after the install, that each is installed at its pin.
#
# --dry-run fetches and checks, runs nothing else, and prints every command it would run
# (`+ command`, one a line) and the pins it would install (`pin name==version`). The check then
# runs with --python, which must have the `packaging` module (the project's .venv does);
# --artifacts may then be a local folder, such as dist/.
set -euo pipefail

readonly PROVIDED_BY_EMR="pyspark py4j"

artifacts=""
environment=""
engine="onnxruntime"
venv="/opt/fruits-features/venv"
python="python3.11"
weights=""
weights_path=""
pyproject=""
dry_run=0

log() { echo "bootstrap-emr: $*" >&2; }
die() {
  echo "bootstrap-emr: error: $*" >&2
  exit 1
}
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
  --artifacts | --environment | --engine | --venv | --python | --weights | --weights-path | --pyproject)
    (($# >= 2)) || die "$1 needs a value"
    case "$1" in
    --artifacts) artifacts=$2 ;;
    --environment) environment=$2 ;;
    --engine) engine=$2 ;;
    --venv) venv=$2 ;;
    --python) python=$2 ;;
    --weights) weights=$2 ;;
    --weights-path) weights_path=$2 ;;
    --pyproject) pyproject=$2 ;;
    esac
    shift 2
    ;;
  --dry-run)
    dry_run=1
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[[ -n $artifacts ]] || die "--artifacts is required (the s3:// folder the submit command uploaded)"
case "$engine" in
onnxruntime) extras="" ;;
tensorflow) extras="tensorflow" ;; # the pyproject.toml extra the engine's nodes install
openvino | auto) extras="openvino" ;;
*) die "--engine must be onnxruntime, tensorflow, openvino or auto, got '$engine'" ;;
esac
readonly requirements="requirements-emr-$engine.txt"
if [[ -n $weights || -n $weights_path ]]; then
  [[ $engine == tensorflow ]] ||
    die "--weights is for --engine tensorflow: with onnxruntime the job fetches its model files from S3"
  [[ $weights == s3://* ]] || die "--weights must be an s3:// URI, got '$weights'"
  [[ $weights_path == /* ]] || die "--weights-path must be an absolute path, got '$weights_path'"
fi
[[ $venv == /* ]] || die "--venv must be an absolute path, got '$venv'"
if [[ -n $environment && $environment != "environment-$engine.tar.gz" ]]; then
  die "--environment $environment was not packed for --engine $engine (environment-$engine.tar.gz)"
fi

# Every command that changes the node goes through run: executed, or printed with --dry-run.
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

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {
  if [[ $artifacts == s3://* ]]; then
    aws s3 cp --only-show-errors "${artifacts%/}/$1" "$work/$1"
  else
    cp "${artifacts%/}/$1" "$work/$1"
  fi
}

fetch SHA256SUMS
wheel=$(awk '$2 ~ /^fruits_features-.*\.whl$/ { print $2 }' "$work/SHA256SUMS")
[[ -n $wheel ]] || die "no wheel is listed in ${artifacts%/}/SHA256SUMS"
for name in "$requirements" constraints.txt "$wheel" ${environment:+"$environment"}; do
  fetch "$name"
  expected=$(awk -v name="$name" '$2 == name { print $1 }' "$work/SHA256SUMS")
  actual=$(sha256sum "$work/$name" | awk '{ print $1 }')
  [[ $expected == "$actual" ]] || die "$name does not match its SHA256SUMS entry: the upload is incomplete"
done

pins=$(grep -Ev '^[[:space:]]*(#|$)' "$work/$requirements")
for provided in $PROVIDED_BY_EMR; do
  if grep -qiE "^${provided}==" <<<"$pins"; then
    die "$requirements pins $provided, which the nodes get from EMR's own Spark"
  fi
done
while read -r pin; do
  echo "pin $pin"
done <<<"$pins"
log "engine $engine: $(wc -l <<<"$pins") pinned requirements ($requirements), then $wheel"

# pin_check PYTHON INSTALLED: requirements == constraints.txt, inside the ranges the wheel (and
# --pyproject) declare for the engine's extras, and with INSTALLED=1 also installed at exactly
# those versions in PYTHON.
pin_check() {
  "$1" - "$work/$requirements" "$work/constraints.txt" "$work/$wheel" \
    "$pyproject" "$2" "$PROVIDED_BY_EMR" "$extras" <<'PY'
"""The pin check: requirements == constraints, inside the declared ranges, and installed."""
import sys
import zipfile
from email.parser import Parser
from importlib import metadata

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:
    sys.exit(f"bootstrap-emr: error: the pin check needs the 'packaging' module in {sys.executable}")

requirements_path, constraints_path, wheel_path, pyproject, installed, provided, extras = sys.argv[1:8]
provided_by_emr = set(provided.split())
extras = extras.split()
label = requirements_path.rsplit("/", 1)[-1]


def read_pins(path):
    pins = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                name, sep, version = line.partition("==")
                if not sep:
                    sys.exit(f"bootstrap-emr: error: {path}: expected name==version, got {line!r}")
                pins[canonicalize_name(name)] = (name, version)
    return pins


requirements = read_pins(requirements_path)
constraints = read_pins(constraints_path)
problems = []
for key, (name, version) in sorted(requirements.items()):
    if key not in constraints:
        problems.append(f"{name}=={version} has no pin in constraints.txt")
    elif constraints[key][1] != version:
        problems.append(f"{name}=={version} but constraints.txt pins {constraints[key][1]}")

declared = []
with zipfile.ZipFile(wheel_path) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    message = Parser().parsestr(wheel.read(meta).decode("utf-8"))
    declared += [("the wheel", line) for line in message.get_all("Requires-Dist") or []]
if pyproject:
    import tomllib

    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    declared += [("pyproject.toml", line) for line in project["dependencies"]]
    for extra in extras:
        declared += [("pyproject.toml", line) for line in project["optional-dependencies"][extra]]
for source, line in declared:
    requirement = Requirement(line)
    if requirement.marker is not None and not any(
        requirement.marker.evaluate({"extra": extra}) for extra in ["", *extras]
    ):
        continue  # another extra (dev, export), or another platform
    key = canonicalize_name(requirement.name)
    if key in provided_by_emr:
        continue
    if key not in requirements:
        problems.append(f"{requirement.name} is required by {source} ({requirement}) but not pinned")
    elif not requirement.specifier.contains(requirements[key][1], prereleases=True):
        name, version = requirements[key]
        problems.append(f"{name}=={version} is outside the range of {source}: {requirement}")

if installed == "1":
    for key, (name, version) in sorted(requirements.items()):
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = "nothing"
        if found != version:
            problems.append(f"{name}=={version} is pinned but {found} is installed")

for problem in problems:
    print(f"bootstrap-emr: pin check: {problem}", file=sys.stderr)
if problems:
    sys.exit(f"bootstrap-emr: error: {len(problems)} pin problem(s)")
where = " and installed" if installed == "1" else ""
print(f"bootstrap-emr: pin check: {len(requirements)} pins of {label} agree with constraints.txt and the "
      f"declared ranges{where}", file=sys.stderr)
PY
}

if ! command -v "$python" >/dev/null 2>&1; then
  if ((dry_run)); then
    die "--dry-run needs --python (a Python with the 'packaging' module) to check the pins"
  fi
  log "installing $python from the Amazon Linux repository"
  "${as_root[@]}" dnf install -y -q "$python" "$python-pip"
fi

if [[ -n $environment ]]; then
  # The packed environment: its interpreter link must find this node's Python.
  if ((dry_run)); then
    pin_check "$python" 0
  fi
  run "${as_root[@]}" rm -rf "$venv"
  run "${as_root[@]}" mkdir -p "$venv"
  run "${as_root[@]}" tar -xzf "$work/$environment" -C "$venv"
  if ((!dry_run)); then
    "$venv/bin/python" -c 'import sys' 2>/dev/null ||
      die "$environment's interpreter $(readlink "$venv/bin/python3.11" || echo '?') is missing on this node"
    log "unpacked $environment into $venv: nothing installed from PyPI"
  fi
else
  # The check needs `packaging` (a pinned dependency of ONNX Runtime and TensorFlow): installed
  # first, at its pin.
  packaging_pin=$(grep -iE '^packaging==' <<<"$pins") || die "$requirements pins no 'packaging'"
  run "${as_root[@]}" "$python" -m venv "$venv"
  run "${as_root[@]}" "$venv/bin/python" -m pip install --quiet --no-cache-dir --no-input "$packaging_pin"
  if ((dry_run)); then
    pin_check "$python" 0
  else
    pin_check "$venv/bin/python" 0
  fi
  run "${as_root[@]}" "$venv/bin/python" -m pip install --quiet --no-cache-dir --no-input \
    -r "$work/$requirements"
  run "${as_root[@]}" "$venv/bin/python" -m pip install --quiet --no-cache-dir --no-input --no-deps \
    "$work/$wheel"
fi

if [[ -n $weights ]]; then
  if [[ -s $weights_path ]]; then
    log "weights already at $weights_path"
  else
    run aws s3 cp --only-show-errors "$weights" "$work/weights.h5"
    run "${as_root[@]}" install -D -m 0644 "$work/weights.h5" "$weights_path"
  fi
fi

if ((!dry_run)); then
  pin_check "$venv/bin/python" 1
  libraries="fruits_features, onnxruntime, pandas, pyarrow"
  if [[ $engine == tensorflow ]]; then
    libraries+=", keras, tensorflow"
  fi
  "$venv/bin/python" -c "import $libraries" ||
    die "the installed environment $venv cannot import the job's libraries ($libraries)"
fi
log "done"
