#!/usr/bin/env bash
# Pre-submission check (docs/submitting.md): in a fresh clone of this repository, run exactly what the TAs
# run -- bash hw1_download_ckpt.sh, bash hw1_1.sh on the office val csv with labels 'None', bash hw1_2.sh on the
# validation tiles -- timed against the 10-minute limit, check every output against the grading contract, score
# them and print them beside the course's baselines. Exit status 1 when anything fails.
#   bash scripts/presubmit.sh [--data DIR] [--python VENV_OR_INTERPRETER] [--time-limit S] [--problems 1 2]
#                             [--allow-dirty] [--keep] [--local-checkpoints [DIR]]   (python3 -m tools.presubmit --help)
# --local-checkpoints: before the checkpoints are uploaded, skip hw1_download_ckpt.sh and use checkpoints/p1_best.pth
# and p2_best.pth (or DIR's); the summary says it is not a full rehearsal. Run it once more without it after uploading.
# PYTHON picks the interpreter that runs the check itself (default: python3); --python, the one the scripts use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" -m tools.presubmit "$@"
