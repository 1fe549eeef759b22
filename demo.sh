#!/usr/bin/env bash
# The demo: installs the requirements, generates a toy dataset in the real layout and runs the pipeline on it
# on the CPU (no GPU, no download): problem 1 (DINO, the stand-in labeled backbone, settings A-E, t-SNE,
# hw1_1.sh) and problem 2 (U-Net, its skip ablation, DeepLabV3, hw1_2.sh, graded mIoU). Toy sizes throughout. Usage: bash demo.sh [OUTPUT_DIR]   (default: demo/)
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
echo "== 1/10 generated data (the real hw1_data layout) in $out/hw1_data"
"$py" -m tools.toydata --out "$out/hw1_data" --size 64 --num 48 --num-val 12
p1="$out/hw1_data/p1_data"
p1_common=(--arch resnet18 --workers 0 --num-classes 8)
ft_common=("${p1_common[@]}" --data-dir "$p1/office" --epochs "$epochs" --batch-size 16 --image-size 48 --lr 0.05
           --hidden-dim 128 --warmup-epochs 1)
echo "== 2/10 DINO pre-training on the unlabeled mini images (resnet18, 48/24 px crops), k-NN on office"
"$py" p1_ssl_pretrain.py "${p1_common[@]}" --data-dir "$p1/mini/train" --output-dir "$out/runs/p1_dino" \
  --epochs "$(( epochs / 2 > 1 ? epochs / 2 : 2 ))" --batch-size 32 --global-crop-size 48 --local-crop-size 24 \
  --local-crops-number 2 --out-dim 256 --hidden-dim 256 --bottleneck-dim 64 --warmup-epochs 1 --knn-size 48 \
  --knn-train-csv "$p1/office/train.csv" --knn-val-csv "$p1/office/val.csv"
echo "== 3/10 STAND-IN for the course's labeled backbone: supervised on the generated mini images' hidden labels"
"$py" p1_finetune.py "${ft_common[@]}" --setting A --output-dir "$out/runs/standin_SL" \
  --train-csv "$p1/standin_mini_labels.csv" --train-dir "$p1/mini/train" --save-epochs
echo "== 4/10 settings A-E on office (B/D: the stand-in; C/E: our DINO backbone)"
for s in A B C D E; do
  case $s in A) bb=none ;; B|D) bb="$out/runs/standin_SL/best.pth" ;; C|E) bb="$out/runs/p1_dino/backbone.pth" ;; esac
  "$py" p1_finetune.py "${ft_common[@]}" --setting $s --backbone "$bb" --output-dir "$out/runs/p1_$s"
done
echo "== 5/10 t-SNE of setting C at its first and last epoch"
"$py" p1_tsne.py --checkpoints "$out/runs/p1_C/epoch_001.pth" "$out/runs/p1_C/epoch_$(printf %03d "$epochs").pth" \
  --titles "epoch 1" "epoch $epochs" --csv "$p1/office/train.csv" --output-dir "$out/runs/p1_tsne" --workers 0 \
  --perplexity 10
echo "== 6/10 grading script hw1_1.sh with setting C on the office val csv"
HW1_P1_CHECKPOINT="$out/runs/p1_C/best.pth" bash hw1_1.sh "$p1/office/val.csv" "$p1/office/val" "$out/pred_p1.csv"
"$py" -m tools.report grade-p1 --pred "$out/pred_p1.csv" --labels "$p1/office/val.csv" -o "$out/runs/grading_p1.json"
common=(--data-dir "$out/hw1_data/p2_data" --epochs "$epochs" --batch-size 8 --crop-size 64 --workers 0
        --snapshot-epochs 1 $(( (epochs + 1) / 2 )) "$epochs" --snapshot-images 0000_sat.jpg 0001_sat.jpg 0002_sat.jpg)
echo "== 7/10 U-Net (model A) and the report's ablation: one skip connection (0, the shallowest) dropped"
"$py" p2_unet.py "${common[@]}" --output-dir "$out/runs/p2_unet" --base-width 16 --depth 3 --lr 3e-3
"$py" p2_unet.py "${common[@]}" --output-dir "$out/runs/p2_unet_drop_skip" --base-width 16 --depth 3 --lr 3e-3 \
  --drop-skip 0
echo "== 8/10 DeepLabV3 (model B) shrunk for the CPU: ResNet-50 at output stride 16, random weights (no download)"
# model B is ResNet-101 at output stride 8 from COCO weights: ~6x this step's CPU time and a 233 MB download;
# toy recipe: a random ResNet-50 on 64 px tiles learns faster with AdamW and without the auxiliary head
"$py" p2_deeplab.py "${common[@]}" --output-dir "$out/runs/p2_deeplab" --weights none --encoder resnet50 \
  --output-stride 16 --optimizer adamw --lr 3e-3 --no-aux
echo "== 9/10 grading script hw1_2.sh with the U-Net checkpoint, and the mIoU of its masks as graded"
HW1_P2_CHECKPOINT="$out/runs/p2_unet/best.pth" bash hw1_2.sh "$out/hw1_data/p2_data/validation" "$out/pred_masks"
"$py" -m utils.metrics -g "$out/hw1_data/p2_data/validation" -p "$out/pred_masks"
"$py" -m tools.report grade-p2 --pred "$out/pred_masks" --labels "$out/hw1_data/p2_data/validation" \
  -o "$out/runs/grading_p2.json"
echo "== 10/10 the report: tables and figures from the runs above"
"$py" -m tools.report "$out/runs" -o "$out/report" --note "Demo on a CPU: toy sizes, $epochs epochs. B/D use a \
STAND-IN for the course's labeled backbone (a short supervised run on the generated mini images' hidden labels)."
echo "demo finished in $(( $(date +%s) - start )) s. Report: $out/report/REPORT.md (figures in $out/report/figures)"
