#!/usr/bin/env bash
# Fetch what the grading scripts need; run from the repository root:
#   bash hw1_download.sh [--data] [--dino-official] [--force]
#   (no flags)       the grading checkpoints of checkpoints/manifest.csv (checkpoints/p1_best.pth, p2_best.pth)
#   --data           also the course's dataset archive (Google Drive; needs gdown), unpacked into hw1_data/
#   --dino-official  also the official DINO ResNet-50 backbone, for comparisons
#   --force          re-download files no pinned sha256 vouches for, and re-download and unpack the data
# It only downloads (and unpacks); it never trains. Exit status 0 when everything requested is present and valid.
python3 -m tools.download "$@"
