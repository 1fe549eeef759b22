#!/usr/bin/env bash
# Problem 1 grading: bash hw1_1.sh <images csv> <image folder> <output csv>
# The graded model is setting C (own SSL backbone, fine-tuned); its checkpoint is fetched beforehand by
# hw1_download_ckpt.sh; HW1_P1_CHECKPOINT overrides its path. Works from any folder: the code and the checkpoint
# are found beside this script; relative arguments are relative to the current folder.
if [ "$#" -ne 3 ] || [ -z "$1" ] || [ -z "$2" ] || [ -z "$3" ]; then
    echo "usage: bash hw1_1.sh <images csv> <image folder> <output csv>" >&2
    exit 2
fi
here="$(dirname "${BASH_SOURCE[0]}")"
python3 "$here/p1_inference.py" --csv="$1" --image-dir="$2" --output="$3" \
    --checkpoint="${HW1_P1_CHECKPOINT:-$here/checkpoints/p1_best.pth}"
