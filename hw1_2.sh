#!/usr/bin/env bash
# Problem 2 grading: bash hw1_2.sh <folder of xxxx_sat.jpg> <output folder for xxxx_mask.png>
# The checkpoint is fetched beforehand by hw1_download_ckpt.sh; HW1_P2_CHECKPOINT overrides its path. Works from
# any folder: the code and the checkpoint are found beside this script; relative arguments are relative to the
# current folder.
if [ "$#" -ne 2 ] || [ -z "$1" ] || [ -z "$2" ]; then
    echo "usage: bash hw1_2.sh <folder of xxxx_sat.jpg> <output folder for xxxx_mask.png>" >&2
    exit 2
fi
here="$(dirname "${BASH_SOURCE[0]}")"
python3 "$here/p2_inference.py" --input-dir="$1" --output-dir="$2" \
    --checkpoint="${HW1_P2_CHECKPOINT:-$here/checkpoints/p2_best.pth}"
