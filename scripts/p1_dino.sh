#!/usr/bin/env bash
# Problem 1, part I: DINO pre-training of ResNet-50 on Mini-ImageNet with the report's recipe (p1_ssl_pretrain.py's
# defaults: 300 epochs, batch 32 per GPU, lr 0.04 per 256 images, 2x224 + 8x96 crops, out_dim 65,536), k-NN on
# Office-Home every epoch, the multi-crop made on the GPU (--batched-aug; BATCHED_AUG=0 uses --workers processes).
# Resumes when run again. Writes $RUNS/p1_dino (checkpoint.pth, log.jsonl, curves.png, backbone.pth).
# NGPUS=4 bash scripts/p1_dino.sh for 4 GPUs (total batch 128, lr 0.02). --preset mini84 for a third of the compute.
source "$(dirname "$0")/_launch.sh"
need "$HW1_DATA/p1_data/mini/train" "Mini-ImageNet train folder"
fast=()
if [ "${BATCHED_AUG:-1}" = 1 ]; then fast=(--batched-aug --image-cache "$RUNS/p1_dino_images.npy"); fi
launch p1_ssl_pretrain.py --data-dir "$HW1_DATA/p1_data/mini/train" --output-dir "$RUNS/p1_dino" "${fast[@]}" \
  --knn-train-csv "$HW1_DATA/p1_data/office/train.csv" --knn-train-dir "$HW1_DATA/p1_data/office/train" \
  --knn-val-csv "$HW1_DATA/p1_data/office/val.csv" --knn-val-dir "$HW1_DATA/p1_data/office/val" "$@"
