#!/usr/bin/env bash
# The demo: installs the requirements, generates a toy dataset in the real layout and runs the pipeline on it
# on the CPU (no GPU, no download). Usage: bash demo.sh [OUTPUT_DIR]   (default: demo/)
# DEMO_SKIP_INSTALL=1 skips the pip step; DEMO_EPOCHS sets the training length (default 8).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
mkdir -p "${1:-demo}"
out=$(cd "${1:-demo}" && pwd)
epochs=${DEMO_EPOCHS:-8}
py=${PYTHON:-python3}
start=$(date +%s)
if [ "${DEMO_SKIP_INSTALL:-0}" != 1 ]; then
  "$py" -m pip install -q -r requirements.txt
fi
export TQDM_DISABLE=${TQDM_DISABLE:-0}
echo "== 1/5 generated data (the real hw1_data layout) in $out/hw1_data"
"$py" -m utils.toydata --out "$out/hw1_data" --size 64 --num 48 --num-val 12
common=(--data-dir "$out/hw1_data/p2_data" --epochs "$epochs" --batch-size 8 --crop-size 64 --workers 0
        --snapshot-epochs 1 $(( (epochs + 1) / 2 )) "$epochs" --snapshot-images 0000_sat.jpg 0001_sat.jpg 0002_sat.jpg)
echo "== 2/5 U-Net (model A) and its skip ablation"
"$py" p2_unet.py "${common[@]}" --output-dir "$out/runs/p2_unet" --base-width 16 --depth 3 --lr 3e-3
"$py" p2_unet.py "${common[@]}" --output-dir "$out/runs/p2_unet_noskip" --base-width 16 --depth 3 --lr 3e-3 \
  --drop-skip 0 1 2
echo "== 3/5 DeepLabV3-ResNet50 (model B), random backbone (no download)"
"$py" p2_deeplab.py "${common[@]}" --output-dir "$out/runs/p2_deeplab" --backbone-weights none --lr 0.02 \
  --epochs "$(( epochs / 2 > 1 ? epochs / 2 : 2 ))" --snapshot-epochs
echo "== 4/5 grading script hw1_2.sh with the U-Net checkpoint"
HW1_P2_CHECKPOINT="$out/runs/p2_unet/best.pth" bash hw1_2.sh "$out/hw1_data/p2_data/validation" "$out/pred_masks"
echo "== 5/5 mIoU of the written masks, as graded"
"$py" -m utils.metrics -g "$out/hw1_data/p2_data/validation" -p "$out/pred_masks"
echo "demo finished in $(( $(date +%s) - start )) s; figures: $out/runs/*/curves.png, $out/runs/p2_unet/snapshots.png"
