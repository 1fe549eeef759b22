#!/usr/bin/env bash
# Fetch the data and what the grading scripts need, through gdown; runs from any folder:
#   bash hw1_download.sh [--data] [--data-2024] [--dino-official] [--force] [--deadline SECONDS]
#   (no flags)       the grading checkpoints of checkpoints/manifest.csv (checkpoints/p1_best.pth, p2_best.pth)
#   --data           also the course's 2025 dataset archive (Google Drive), unpacked into data_2025/
#   --data-2024      also the 2024 edition's archive, unpacked into hw1_data/ (not the 2025 data)
#   --dino-official  also DINO's public ResNet-50 (ImageNet-1k) as checkpoints/official_dino_model.pth, the backbone
#                    of p1_finetune.py's settings B and D (a file already there, e.g. the TAs', is kept)
#   --force          download the data archive again (the one there is replaced only by a whole zip)
#   --deadline S     give up on a file not whole after S seconds (default 3600)
# It only downloads (and unpacks); it never trains. Exit status 0 when everything requested is present and valid.
# The TAs' step is hw1_download_ckpt.sh (the same module, graded checkpoints only).
PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}" python3 -m tools.download "$@"
