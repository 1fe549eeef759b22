#!/usr/bin/env bash
# The test suite again in the grading machine's environment: Python 3.8 with exactly the 2025 course
# requirements (the course's 2025 README, docs/development.md): imageio 2.21.2, matplotlib 3.7.5, numpy 1.24.4,
# Pillow 10.4.0, pandas 2.0.3, scipy 1.10.1, torch 2.4.0, torchvision 0.19.0, tensorboard 2.14.0, timm 1.0.19,
# gdown (which brings tqdm) -- and NO scikit-learn -- plus pytest to run the tests. vermin checks the syntax;
# this catches what only runs differently there (numpy's casting rules, torch APIs, kernels that round
# differently, an import of a package the TAs do not install). Tests that need scikit-learn (the t-SNE) skip.
# Usage: bash .ci/grading_env.sh [pytest args]
#   VENV=path      the virtual environment (default under /tmp; reused when it exists)
#   PYTHON38=path  the Python 3.8 interpreter (default: python3.8 on PATH, else pyenv's)
#   OPTIONAL=1     exit 0 with a SKIPPED line when no Python 3.8 is found (what .ci/run does)
#   GDOWN_VERSION=X.Y.Z  run with that gdown instead (installed beside the environment, first on PYTHONPATH)
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
VENV=${VENV:-${TMPDIR:-/tmp}/hw1-grading-venv38-2025}
if [ ! -x "$VENV/bin/python" ]; then
    "$found" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    imageio==2.21.2 matplotlib==3.7.5 numpy==1.24.4 pillow==10.4.0 pandas==2.0.3 scipy==1.10.1 \
    torch==2.4.0 torchvision==0.19.0 tensorboard==2.14.0 timm==1.0.19 gdown \
    pytest
# A reused environment may hold what the TAs do not install: scikit-learn must not be importable there.
if "$VENV/bin/python" -c 'import sklearn' >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall -q -y scikit-learn
fi
"$VENV/bin/python" -c 'import sys, torch, torchvision, numpy, PIL, matplotlib, gdown
print("grading environment: Python {}.{}, torch {}, torchvision {}, numpy {}, Pillow {}, matplotlib {}, gdown {}, "
      "no scikit-learn".format(sys.version_info[0], sys.version_info[1], torch.__version__, torchvision.__version__,
                               numpy.__version__, PIL.__version__, matplotlib.__version__, gdown.__version__))'
if [ -n "${GDOWN_VERSION:-}" ]; then  # e.g. the oldest gdown requirements.txt allows, over the environment's own
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --upgrade \
        --target "$VENV-gdown-$GDOWN_VERSION" "gdown==$GDOWN_VERSION"
    export PYTHONPATH="$VENV-gdown-$GDOWN_VERSION${PYTHONPATH:+:$PYTHONPATH}"
    "$VENV/bin/python" -c 'import importlib.metadata as m; print("with gdown", m.version("gdown"))'  # 5.1.0 says 4.7.3
fi
"$VENV/bin/python" -m pytest -q "$@"
