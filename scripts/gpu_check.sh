#!/usr/bin/env bash
# One short, prepared run of every CUDA-specific path and the GPU performance targets (README, Performance):
#   1. the device and its bf16 support;  2. benchmark.py --reference (augmentation, DINO / fine-tuning /
#   segmentation steps, inference) with side-by-side ratios;  3. DINO end to end on generated Mini-ImageNet-sized
#   images (84 px) with --batched-aug and with the per-image path (images/s per epoch, data included);
#   4. torchrun + NCCL + SyncBatchNorm on this GPU (p2_unet.py, one epoch);  5. hw1_2.sh on 313 generated
#   512 px tiles with a model-B checkpoint (DeepLabV3-ResNet101, output stride 8), timed with start-up, then
#   p2_inference.py --tta flip,scale on the same tiles (the 10-minute budget with TTA).  Writes
#   $OUT/summary.json and prints it.
# Environment: DEVICE (cuda), OUT (runs/gpu_check), SCALE (full | tiny: CPU-sized, what the test runs),
# DINO_BATCH (32, the recipe's per-GPU batch), PYTHON (python3). About 6 minutes on one H100 at SCALE=full.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu_check}
SCALE=${SCALE:-full}
PYTHON=${PYTHON:-python3}
export TQDM_DISABLE=${TQDM_DISABLE:-1}
mkdir -p "$OUT"
if [ "$SCALE" = tiny ]; then
  mini_per_class=6; tiles=6; tile=64; arch=resnet18; epochs=2; dino_batch=${DINO_BATCH:-8}; workers=0
  seg_encoder=resnet50; seg_stride=16  # CPU-sized stand-in for model B
  bench=(--batch-size 2 --arch resnet18 --out-dim 256 --hidden-dim 64 --bottleneck-dim 32 --seg-size 64
         --seg-batch-size 2 --image-size 32 --global-crop-size 32 --local-crop-size 16 --local-crops-number 2 --steps 1 --warmup 1)
  dino_extra=(--global-crop-size 32 --local-crop-size 16 --local-crops-number 2 --out-dim 256 --hidden-dim 64
              --bottleneck-dim 32)
  unet_extra=(--base-width 8 --depth 2 --crop-size 64 --batch-size 2)
else
  mini_per_class=480; tiles=313; tile=512; arch=resnet50; epochs=3; dino_batch=${DINO_BATCH:-32}; workers=8
  seg_encoder=resnet101; seg_stride=8  # model B as graded
  bench=(); dino_extra=(); unet_extra=(--crop-size 256 --batch-size 8)
fi

echo "== 1/5 device"
"$PYTHON" - "$DEVICE" "$OUT/device.json" <<'EOF'
import json, sys, torch
from utils.precision import cpu_bf16_supported
dev = sys.argv[1]
info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "device": dev}
if dev.startswith("cuda"):
    if not torch.cuda.is_available():
        raise SystemExit("error: DEVICE={} but CUDA is not available".format(dev))
    info.update(name=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1))
else:
    info.update(name="cpu", bf16=cpu_bf16_supported())
json.dump(info, open(sys.argv[2], "w"))
print(json.dumps(info))
EOF

echo "== 2/5 benchmark.py --reference"
"$PYTHON" -m tools.benchmark --device "$DEVICE" --reference "${bench[@]}" --json-out "$OUT/bench.jsonl"

echo "== 3/5 DINO end to end: --batched-aug, then the per-image path ($((mini_per_class * 8)) images of 84 px)"
"$PYTHON" -m tools.toydata --out "$OUT/data" --parts p1 --p1-classes 8 --p1-mini-per-class "$mini_per_class" \
  --p1-office-per-class 1 --p1-office-val-per-class 1
for path in batched per_image; do
  flags=(); [ $path = batched ] && flags=(--batched-aug)
  "$PYTHON" p1_ssl_pretrain.py --data-dir "$OUT/data/p1_data/mini/train" --output-dir "$OUT/dino_$path" \
    --overwrite --device "$DEVICE" --arch "$arch" --epochs "$epochs" --batch-size "$dino_batch" --workers "$workers" \
    --save-every 0 "${dino_extra[@]}" "${flags[@]}"
done

echo "== 4/5 torchrun (NCCL on GPU) + SyncBatchNorm: p2_unet.py, one epoch"
"$PYTHON" -m tools.toydata --out "$OUT/data" --parts p2 --size "$tile" --num 8 --num-val "$tiles"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 p2_unet.py --data-dir "$OUT/data/p2_data" \
  --output-dir "$OUT/unet_ddp" --overwrite --epochs 1 --workers "$workers" --device "$DEVICE" "${unet_extra[@]}"

echo "== 5/5 hw1_2.sh on $tiles tiles of $tile px (DeepLabV3-$seg_encoder OS $seg_stride checkpoint, random weights),"\
  "with start-up; then p2_inference.py --tta flip,scale"
"$PYTHON" - "$OUT/deeplab.pth" "$seg_encoder" "$seg_stride" <<'EOF'
import sys
from utils.checkpoint import make_checkpoint, save_atomic
from utils.models import build_seg_model
from utils.predict import SEG_KIND
config = {"arch": "deeplabv3", "num_classes": 7, "encoder": sys.argv[2], "output_stride": int(sys.argv[3]),
          "backbone_weights": "none", "aux_loss": True}
save_atomic(make_checkpoint(SEG_KIND, config, build_seg_model(config).state_dict()), sys.argv[1])
EOF
rm -rf "$OUT/masks" "$OUT/masks_tta"
start=$(date +%s.%N)
HW1_P2_CHECKPOINT="$OUT/deeplab.pth" bash hw1_2.sh "$OUT/data/p2_data/validation" "$OUT/masks"
end=$(date +%s.%N)
"$PYTHON" p2_inference.py --input-dir "$OUT/data/p2_data/validation" --output-dir "$OUT/masks_tta" \
  --checkpoint "$OUT/deeplab.pth" --tta flip,scale --workers "$workers" --device "$DEVICE"
tta_end=$(date +%s.%N)

"$PYTHON" - "$OUT" "$start" "$end" "$tiles" "$tta_end" <<'EOF'
import json, sys
from pathlib import Path
out, start, end, tiles = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
tta_end = float(sys.argv[5])
def epochs(run):
    return [r for r in (json.loads(l) for l in (out / run / "log.jsonl").read_text().splitlines()) if "loss" in r]
summary = {"device": json.loads((out / "device.json").read_text()),
           "benchmark": [json.loads(l) for l in (out / "bench.jsonl").read_text().splitlines()],
           "dino_batched_images_per_s": [round(r["images_per_s"], 1) for r in epochs("dino_batched")],
           "dino_per_image_images_per_s": [round(r["images_per_s"], 1) for r in epochs("dino_per_image")],
           "unet_torchrun_ok": (out / "unet_ddp" / "results.json").is_file(),
           "hw1_2_seconds": round(end - start, 1), "hw1_2_masks": len(list((out / "masks").glob("*_mask.png"))),
           "hw1_2_tiles": tiles, "tta_flip_scale_seconds": round(tta_end - end, 1),
           "tta_flip_scale_masks": len(list((out / "masks_tta").glob("*_mask.png")))}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: v for k, v in summary.items() if k != "benchmark"}, indent=2))
EOF
