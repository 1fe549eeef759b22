#!/usr/bin/env bash
# Pre-submission check (docs/submitting.md): in a fresh clone of this repository, run exactly what the TAs
# run -- bash hw1_download_ckpt.sh, bash hw1_1.sh on the office val csv with labels 'None', bash hw1_2.sh on the
# validation tiles -- timed against the 10-minute limit, check every output against the grading contract, score
# them and print them beside the course's baselines. Exit status 1 when anything fails.
#   bash scripts/presubmit.sh [--data DIR] [--python VENV_OR_INTERPRETER] [--time-limit S] [--problems 1 2]
#                             [--allow-dirty] [--keep] [--local-checkpoints [DIR]]   (python3 -m tools.presubmit --help)
# --local-checkpoints: before the checkpoints are uploaded, skip hw1_download_ckpt.sh and use checkpoints/p1_best.pth
# and p2_best.pth (or DIR's); the summary says it is not a full rehearsal. Run it once more without it after uploading.
# --python runs the check itself too (the python3 on PATH may lack its packages); PYTHON, when set, picks the
# check's interpreter instead. Relative paths are taken relative to the current folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python=""
prev=""
for arg in "$@"; do
  if [ "$prev" = --python ]; then python=$arg; fi
  case $arg in --python=*) python=${arg#--python=} ;; esac
  prev=$arg
done
if [ -n "$python" ] && [ -d "$python" ]; then  # a virtual environment folder
  if [ -x "$python/bin/python3" ]; then python=$python/bin/python3; else python=$python/bin/python; fi
fi
# run from the caller's folder (its relative --data/--python/--repo stay as typed), the repository first on sys.path
exec "${PYTHON:-${python:-python3}}" -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = "presubmit"
from tools.presubmit import main
sys.exit(main())' "$root" "$@"
