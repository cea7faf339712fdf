#!/usr/bin/env bash
# Create the two benchmark environments (see README.md). Run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${BENCH_PYTHON:-/root/.pyenv/versions/3.11.7/bin/python}"
"$python" -m venv /work/bench-venv
/work/bench-venv/bin/pip install -q -e "$here/.." -r "$here/requirements.txt"
"$python" -m venv /work/bench-venv-arq
/work/bench-venv-arq/bin/pip install -q -r "$here/requirements-arq.txt"
echo "ready: python $here/run.py --quick"
