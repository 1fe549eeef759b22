#!/usr/bin/env bash
# What the TAs run before any inference, from the repository root and with no arguments:
#   bash hw1_download_ckpt.sh
# It fetches the graded checkpoints (problem 1 setting C -> checkpoints/p1_best.pth, problem 2 ->
# checkpoints/p2_best.pth) with gdown from the links in checkpoints/manifest.csv (Google Drive, Dropbox or plain
# https), verifies their sha256 (a row with a link must have one) and installs each atomically. It never trains.
# A row without a link is an error that says what to do (docs/submitting.md), and so is a graded checkpoint without
# exactly one `grading` row (missing, mistyped, doubled: the lines are named). It works from any folder: the module
# is found beside this script.
PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}" python3 -m tools.download --submission "$@"
