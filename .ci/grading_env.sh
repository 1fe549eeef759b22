#!/usr/bin/env bash
# The test suite again in the grading machine's versions: Python 3.8, torch 2.4.0, torchvision 0.19.0,
# numpy 1.24, Pillow 10.4, scikit-learn 1.3.2, matplotlib 3.7 (../shared/GRADING.md). vermin checks the syntax;
# this catches what only runs differently there (numpy's casting rules, torch APIs, kernels that round differently).
# Usage: bash .ci/grading_env.sh [pytest args]
#   VENV=path      the virtual environment (default under /tmp; reused when it exists)
#   PYTHON38=path  the Python 3.8 interpreter (default: python3.8 on PATH, else pyenv's)
#   OPTIONAL=1     exit 0 with a SKIPPED line when no Python 3.8 is found (what .ci/run does)
set -euo pipefail
cd "$(dirname "$0")/.."
found=""
for candidate in ${PYTHON38:-} python3.8 "$HOME"/.pyenv/versions/3.8.*/bin/python; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 8)' >/dev/null 2>&1; then
        found=$candidate
        break
    fi
done
if [ -z "$found" ]; then
    if [ "${OPTIONAL:-0}" = 1 ]; then
        echo "SKIPPED: no Python 3.8 interpreter on this machine (vermin still checks the syntax)"
        exit 0
    fi
    echo "grading_env: no Python 3.8 interpreter found (set PYTHON38=...)" >&2
    exit 2
fi
VENV=${VENV:-${TMPDIR:-/tmp}/hw1-grading-venv38}
if [ ! -x "$VENV/bin/python" ]; then
    "$found" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    torch==2.4.0 torchvision==0.19.0 numpy==1.24.4 pillow==10.4.0 scikit-learn==1.3.2 'matplotlib==3.7.*' \
    tqdm pytest
"$VENV/bin/python" -c 'import sys, torch, torchvision, numpy, PIL, sklearn, matplotlib
print("grading environment: Python {}.{}, torch {}, torchvision {}, numpy {}, Pillow {}, scikit-learn {}, "
      "matplotlib {}".format(sys.version_info[0], sys.version_info[1], torch.__version__, torchvision.__version__,
                             numpy.__version__, PIL.__version__, sklearn.__version__, matplotlib.__version__))'
"$VENV/bin/python" -m pytest -q "$@"
