#!/usr/bin/env bash
# The system packages `make run`, `make test` and `make bench` need, checked before any work and
# installed where this machine allows it (root or password-less sudo, and apt-get or dnf).
#
#   scripts/setup-system.sh [--check] [--python PYTHON] venv|run|test|bench
#
# venv   Python 3.11+ with venv (to create .venv)
# run    venv + Java 17+; a native BLAS/LAPACK is recommended for Spark ML (the PCA fit no longer needs it)
# bench  as run
# test   run + Chromium (the report tests) + shellcheck (the script tests) + Node.js with npm
#        (the IAM policy evaluator the policy tests run)
#
# --check  report what is present and what would be installed; install nothing, exit 0.
# --python the interpreter to check (default python3).
#
# Missing and installable: installed once, quietly (the package manager's output goes to a log
# file, named on failure). Missing and not installable: one message listing exactly what is
# missing and the command that installs it, exit 1, before anything else runs. A missing native
# LAPACK is never fatal: one line says what it costs and how to fix it.
# The have_* checks are called by name ("have_$need"), which shellcheck cannot follow:
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0 [--check] [--python PYTHON] venv|run|test|bench" >&2; exit 2; }

check_only=0
python_bin=python3
target=
while (($#)); do
  case $1 in
    --check | --dry-run) check_only=1 ;;
    --python) shift; python_bin=${1:-} ;;
    venv | run | test | bench) target=$1 ;;
    *) usage ;;
  esac
  shift
done
[[ -n $target && -n $python_bin ]] || usage

# --- what is there ---------------------------------------------------------------------------

have_python() {
  command -v "$python_bin" >/dev/null 2>&1 &&
    "$python_bin" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

have_java() {
  command -v java >/dev/null 2>&1 || return 1
  local version
  version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n 1)
  [[ -n $version && $version -ge 17 ]]
}

have_chromium() {
  [[ -n ${CHROMIUM:-} && -x ${CHROMIUM} ]] && return 0
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
    command -v google-chrome >/dev/null 2>&1
}

have_shellcheck() { command -v shellcheck >/dev/null 2>&1; }

# Node.js 18+ with npm: tests/iam/ installs and runs the IAM evaluator with them.
have_node() {
  command -v npm >/dev/null 2>&1 || return 1
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' 2>/dev/null
}

# Spark's netlib (dev.ludovic.netlib) loads the system's liblapack.so.3 and libblas.so.3.
have_lapack() {
  local ldconfig
  ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  "$ldconfig" -p 2>/dev/null | grep 'liblapack\.so\.3 ' >/dev/null # no -q: an early exit would fail ldconfig (pipefail)
}

# --- what installs it ------------------------------------------------------------------------

# The package for a need, per package manager; empty where that system has none.
package_for() { # need manager
  case $1:$2 in
    python:apt-get) echo "python3 python3-venv" ;;
    python:dnf) echo "python3.11" ;;
    java:apt-get) echo "openjdk-17-jre-headless" ;;
    java:dnf) echo "java-17-amazon-corretto-headless" ;;
    chromium:apt-get) echo "chromium" ;;
    chromium:dnf) echo "" ;; # Amazon Linux 2023 packages no Chromium
    shellcheck:apt-get) echo "shellcheck" ;;
    shellcheck:dnf) echo "" ;; # nor shellcheck
    node:apt-get) echo "nodejs npm" ;;
    node:dnf) echo "nodejs npm" ;;
    lapack:apt-get) echo "libopenblas0-pthread" ;;
    lapack:dnf) echo "openblas" ;;
  esac
}

install_command() { # manager packages...
  local manager=$1
  shift
  case $manager in
    apt-get) echo "sudo apt-get update && sudo apt-get install -y $*" ;;
    dnf) echo "sudo dnf install -y $*" ;;
  esac
}

describe() {
  case $1 in
    python) echo "Python 3.11+ with venv (as '$python_bin')" ;;
    java) echo "Java 17+ (Spark)" ;;
    chromium) echo "Chromium (the report tests open the page in it; or set CHROMIUM to a browser)" ;;
    shellcheck) echo "shellcheck (the script tests)" ;;
    node) echo "Node.js 18+ with npm (the IAM policy tests' evaluator)" ;;
    lapack) echo "a native BLAS/LAPACK for Spark ML (the classifier; the PCA fit uses numpy's own)" ;;
  esac
}

needs=(python)
case $target in
  run | bench) needs+=(java) ;;
  test) needs+=(java chromium shellcheck node) ;;
esac
optional=()
[[ $target == venv ]] || optional=(lapack)

missing=()
for need in "${needs[@]}"; do "have_$need" || missing+=("$need"); done
missing_optional=()
for need in "${optional[@]}"; do "have_$need" || missing_optional+=("$need"); done

manager=
if command -v apt-get >/dev/null 2>&1; then
  manager=apt-get
elif command -v dnf >/dev/null 2>&1; then
  manager=dnf
fi
as_root=()
can_install=0
if [[ -n $manager ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    can_install=1
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
    can_install=1
  fi
fi

packages_of() { # needs... -> the packages the detected manager installs them with
  local need package
  for need in "$@"; do
    package=$(package_for "$need" "${manager:-apt-get}")
    [[ -n $package ]] && echo "$package"
  done
  return 0
}

# The commands that install these needs on Debian/Ubuntu and on Amazon Linux.
how_to_install() { # needs...
  local debian=() amazon=() none=() need words package
  for need in "$@"; do
    read -r -a words <<<"$(package_for "$need" apt-get)"
    debian+=("${words[@]}")
    package=$(package_for "$need" dnf)
    if [[ -n $package ]]; then amazon+=("$package"); else none+=("$need"); fi
  done
  echo "  Debian/Ubuntu: $(install_command apt-get "${debian[@]}")"
  if ((${#amazon[@]})); then
    echo "  Amazon Linux:  $(install_command dnf "${amazon[@]}")"
  fi
  if ((${#none[@]})); then
    echo "  (Amazon Linux has no package for: ${none[*]})"
  fi
}

lapack_cost="without it Spark ML's linear algebra (the classifier's) falls back to Java code; the PCA fit does not need it (numpy's own LAPACK, since issue 24; it cost 25-40 s more per fit before)"

# --- check mode ------------------------------------------------------------------------------

if ((check_only)); then
  for need in "${needs[@]}" "${optional[@]}"; do
    if "have_$need"; then state=present; else state=missing; fi
    printf 'setup: %-10s %s: %s\n' "$need" "$state" "$(describe "$need")"
  done
  wanted=("${missing[@]}" "${missing_optional[@]}")
  if ((${#wanted[@]} == 0)); then
    echo "setup: nothing to install"
  else
    mapfile -t packages < <(packages_of "${wanted[@]}")
    if ((can_install)) && ((${#packages[@]})); then
      echo "setup: would install with $manager: ${packages[*]}"
    else
      echo "setup: cannot install here (needs root or password-less sudo, and apt-get or dnf); install with:"
      how_to_install "${wanted[@]}"
    fi
  fi
  exit 0
fi

# --- install ---------------------------------------------------------------------------------

install() { # needs... (returns non-zero when the package manager failed)
  local packages log
  mapfile -t packages < <(packages_of "$@")
  ((${#packages[@]})) || return 1
  log=$(mktemp "${TMPDIR:-/tmp}/fruits-setup.XXXXXX.log")
  echo "setup: installing ${packages[*]} with $manager (once; log: $log)" >&2
  read -r -a packages <<<"${packages[*]}"
  if [[ $manager == apt-get ]]; then
    { "${as_root[@]}" apt-get update -qq &&
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } >"$log" 2>&1
  else
    "${as_root[@]}" dnf install -y -q "${packages[@]}" >"$log" 2>&1
  fi
}

if ((${#missing[@]} + ${#missing_optional[@]})) && ((can_install)); then
  install "${missing[@]}" "${missing_optional[@]}" || true
  still=()
  for need in "${missing[@]}"; do "have_$need" || still+=("$need"); done
  missing=("${still[@]}")
  still=()
  for need in "${missing_optional[@]}"; do "have_$need" || still+=("$need"); done
  missing_optional=("${still[@]}")
fi

if ((${#missing[@]})); then
  {
    echo "error: 'make $target' needs what this machine lacks:"
    for need in "${missing[@]}"; do echo "  - $(describe "$need")"; done
    echo "Install with:"
    how_to_install "${missing[@]}" "${missing_optional[@]}"
  } >&2
  exit 1
fi
if ((${#missing_optional[@]})); then
  echo "warning: no native LAPACK: $lapack_cost. Install it with:" >&2
  how_to_install lapack >&2
fi
exit 0
