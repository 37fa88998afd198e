#!/usr/bin/env bash
# Fails with one line saying what to install when Python 3.11+ or Java 17+ is missing.
set -euo pipefail

python_bin=${1:-python3}
if ! command -v "$python_bin" >/dev/null 2>&1 ||
  ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is required as '$python_bin' (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! command -v java >/dev/null 2>&1; then
  echo "error: Java 17 or newer is required by Spark and was not found (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n 1)
if [ -z "$version" ] || [ "$version" -lt 17 ]; then
  echo "error: Java 17 or newer is required by Spark, found '${version:-unknown}' (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
