#!/usr/bin/env bash
# Problem 2 grading: bash hw1_2.sh <folder of xxxx_sat.jpg> <output folder for xxxx_mask.png>
# The checkpoint is fetched beforehand by hw1_download.sh; HW1_P2_CHECKPOINT overrides its path.
python3 p2_inference.py --input-dir "$1" --output-dir "$2" --checkpoint "${HW1_P2_CHECKPOINT:-checkpoints/p2_best.pth}"
