#!/usr/bin/env bash
# Problem 1 grading: bash hw1_1.sh <images csv> <image folder> <output csv>
# The graded model is setting C (own SSL backbone, fine-tuned); its checkpoint is fetched beforehand by
# hw1_download.sh; HW1_P1_CHECKPOINT overrides its path.
python3 p1_inference.py --csv "$1" --image-dir "$2" --output "$3" --checkpoint "${HW1_P1_CHECKPOINT:-checkpoints/p1_best.pth}"
