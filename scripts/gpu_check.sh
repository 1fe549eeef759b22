#!/usr/bin/env bash
# One short, prepared run of every CUDA path and the GPU figures of issue 16 (docs/performance.md), at the report's
# recipe (ResNet-50, 2x224 + 8x96 crops, out_dim 65,536, batch 32):
#   1. the device and its bf16 support;
#   2. tools/benchmark.py --reference: the DINO step fp32 vs bf16 + channels_last (ratio, loss agreement), the
#      batched vs per-image vs PIL augmentation, fine-tuning / segmentation steps, inference; the DINO step again with
#      --compile (COMPILE=0 skips it); the largest DINO batch that fits (doubling until out of memory);
#   3. DINO end to end on 3,840 generated 84-px images, 3 epochs (~360 steps), with --batched-aug and with the
#      per-image path in --workers processes: images/s, GPU busy fraction and peak memory (nvidia-smi sampled every
#      200 ms), hours for 300 epochs of 38,400 images;
#   4. torchrun --nproc_per_node=1 with NCCL and SyncBatchNorm (p2_unet.py, one short epoch);
#   5. hw1_2.sh on 313 generated 512-px tiles with model B (DeepLabV3-ResNet101 OS 8, random weights) and hw1_1.sh on
#      2,000 generated images with a ResNet-50 setting-C classifier at 224 px, each timed from a cold start (a new
#      process: imports, model load, decode, write), then p2_inference.py --tta flip,scale.
# Writes $OUT/summary.json and prints it. Environment: DEVICE (cuda), OUT (runs/gpu_check), SCALE (full | tiny:
# CPU-sized, what the test runs), DINO_BATCH (32), COMPILE (1), PYTHON (python3). About 8 minutes on one H100.
# A relative OUT (or PYTHON path) is taken relative to the folder this is run from.
set -euo pipefail
for var in OUT PYTHON; do
  value=${!var:-}  # PYTHON: a path (holding a /) only; a command name stays a name looked up on PATH
  if [ -n "$value" ] && [[ $value != /* ]] && { [ "$var" != PYTHON ] || [[ $value == */* ]]; }; then
    printf -v "$var" '%s/%s' "$PWD" "$value"
  fi
done
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu_check}
SCALE=${SCALE:-full}
PYTHON=${PYTHON:-python3}
export TQDM_DISABLE=${TQDM_DISABLE:-1}
mkdir -p "$OUT"
if [ "$SCALE" = tiny ]; then
  mini_per_class=6; tiles=6; tile=64; arch=resnet18; epochs=2; dino_batch=${DINO_BATCH:-8}; workers=0
  office_images=12; p1_size=32; compile=0
  seg_encoder=resnet50; seg_stride=16  # CPU-sized stand-in for model B
  crops=(--global-crop-size 32 --local-crop-size 16 --local-crops-number 2)
  head=(--out-dim 256 --hidden-dim 64 --bottleneck-dim 32)
  bench=(--batch-size 2 --arch resnet18 "${head[@]}" --seg-size 64 --seg-batch-size 2 --image-size 32 "${crops[@]}"
         --steps 1 --warmup 1)
  dino_extra=("${crops[@]}" "${head[@]}")
  unet_extra=(--base-width 8 --depth 2 --crop-size 64 --batch-size 2)
else
  mini_per_class=480; tiles=313; tile=512; arch=resnet50; epochs=3; dino_batch=${DINO_BATCH:-32}; workers=8
  office_images=2000; p1_size=224; compile=${COMPILE:-1}
  seg_encoder=resnet101; seg_stride=8  # model B as graded
  bench=(); dino_extra=(); unet_extra=(--crop-size 256 --batch-size 8)
fi
sampler=""
gpu_start() {  # gpu_start NAME: sample utilisation and memory every 200 ms into $OUT/gpu_NAME.csv (when nvidia-smi)
  if command -v nvidia-smi >/dev/null 2>&1 && [ "${DEVICE%%:*}" = cuda ]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/gpu_$1.csv" &
    sampler=$!
  fi
}
gpu_stop() { if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; sampler=""; fi; }
trap gpu_stop EXIT

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

echo "== 2/5 tools/benchmark.py --reference (fp32 vs bf16 + channels_last), --compile, the largest DINO batch"
"$PYTHON" -m tools.benchmark --device "$DEVICE" --reference "${bench[@]}" --json-out "$OUT/bench.jsonl"
if [ "$compile" = 1 ]; then
  "$PYTHON" -m tools.benchmark --device "$DEVICE" --only dino_step --compile --warmup 5 --steps 10 \
    --json-out "$OUT/bench_compile.jsonl" || echo "--compile failed (recorded as missing)"
fi
: > "$OUT/bench_batches.jsonl"
if [ "$SCALE" != tiny ]; then
  for b in 64 128 256 512; do  # doubling from the recipe's 32 until the step runs out of memory
    "$PYTHON" -m tools.benchmark --device "$DEVICE" --only dino_step --batch-size "$b" --steps 3 --warmup 1 \
      --json-out "$OUT/bench_b$b.jsonl" || break
    cat "$OUT/bench_b$b.jsonl" >> "$OUT/bench_batches.jsonl"
  done
fi

echo "== 3/5 DINO end to end: --batched-aug, then the per-image path ($((mini_per_class * 8)) images of 84 px)"
"$PYTHON" -m tools.toydata --out "$OUT/data" --parts p1 --p1-classes 8 --p1-mini-per-class "$mini_per_class" \
  --p1-office-per-class 1 --p1-office-val-per-class 1
for path in batched per_image; do
  flags=(); [ $path = batched ] && flags=(--batched-aug)
  gpu_start "dino_$path"
  "$PYTHON" p1_ssl_pretrain.py --data-dir "$OUT/data/p1_data/mini/train" --output-dir "$OUT/dino_$path" \
    --overwrite --device "$DEVICE" --arch "$arch" --epochs "$epochs" --batch-size "$dino_batch" --workers "$workers" \
    --warmup-epochs 1 --save-every 0 "${dino_extra[@]}" "${flags[@]}"
  gpu_stop
done

echo "== 4/5 torchrun (NCCL on GPU) + SyncBatchNorm: p2_unet.py, one epoch"
"$PYTHON" -m tools.toydata --out "$OUT/data" --parts p2 --size "$tile" --num 8 --num-val "$tiles"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 p2_unet.py --data-dir "$OUT/data/p2_data" \
  --output-dir "$OUT/unet_ddp" --overwrite --epochs 1 --workers "$workers" --device "$DEVICE" "${unet_extra[@]}"

echo "== 5/5 hw1_2.sh on $tiles tiles (DeepLabV3-$seg_encoder OS $seg_stride), hw1_1.sh on $office_images images,"\
  "from a cold start; then p2_inference.py --tta flip,scale"
"$PYTHON" - "$OUT" "$seg_encoder" "$seg_stride" "$arch" "$p1_size" "$office_images" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from utils.checkpoint import make_checkpoint, save_atomic
from utils.classify import CLASSIFIER_KIND, build_classifier
from utils.models import build_seg_model
from utils.predict import SEG_KIND
out, encoder, stride, arch, size, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], \
    int(sys.argv[5]), int(sys.argv[6])
config = {"arch": "deeplabv3", "num_classes": 7, "encoder": encoder, "output_stride": stride,
          "backbone_weights": "none", "aux_loss": True}
save_atomic(make_checkpoint(SEG_KIND, config, build_seg_model(config).state_dict()), out / "deeplab.pth")
config = {"arch": arch, "num_classes": 65, "hidden_dim": 1024, "dropout": 0.5}
save_atomic(make_checkpoint(CLASSIFIER_KIND, config, build_classifier(config).state_dict(), image_size=size,
                            mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], num_classes=65),
            out / "classifier.pth")
folder = out / "office_test"
folder.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
lines = ["id,filename,label"]
for i in range(count):  # Office-Home-like sizes
    h, w = (int(x) for x in rng.integers(180, 640, 2))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "{:04d}.jpg".format(i), quality=90)
    lines.append("{},{:04d}.jpg,None".format(i, i))
(out / "office_test.csv").write_text("\n".join(lines) + "\n")
EOF
rm -rf "$OUT/masks" "$OUT/masks_tta" "$OUT/pred_p1.csv"
gpu_start hw1_2
start=$(date +%s.%N)
HW1_P2_CHECKPOINT="$OUT/deeplab.pth" bash hw1_2.sh "$OUT/data/p2_data/validation" "$OUT/masks"
end=$(date +%s.%N)
gpu_stop
gpu_start hw1_1
p1_start=$(date +%s.%N)
HW1_P1_CHECKPOINT="$OUT/classifier.pth" bash hw1_1.sh "$OUT/office_test.csv" "$OUT/office_test" "$OUT/pred_p1.csv"
p1_end=$(date +%s.%N)
gpu_stop
gpu_start tta
"$PYTHON" p2_inference.py --input-dir "$OUT/data/p2_data/validation" --output-dir "$OUT/masks_tta" \
  --checkpoint "$OUT/deeplab.pth" --tta flip,scale --workers "$workers" --device "$DEVICE"
tta_end=$(date +%s.%N)
gpu_stop

"$PYTHON" - "$OUT" "$start" "$end" "$tiles" "$tta_end" "$p1_start" "$p1_end" "$office_images" <<'EOF'
import json, sys
from pathlib import Path
out, start, end, tiles = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
tta_end, p1_start, p1_end, office_images = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])

def lines(name):
    path = out / name
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.is_file() else []

def epochs(run):
    return [r for r in lines(run + "/log.jsonl") if "loss" in r]

def gpu(name):  # busy fraction (mean utilisation) and peak memory from the nvidia-smi samples, or None
    path = out / "gpu_{}.csv".format(name)
    rows = [l.split(",") for l in path.read_text().splitlines() if l.count(",") == 1] if path.is_file() else []
    if not rows:
        return None
    util, mem = [float(r[0]) for r in rows], [float(r[1]) for r in rows]
    steady = util[len(util) // 5:] or util  # the first fifth is start-up (imports, decoding, cudnn autotuning)
    return {"busy_fraction": round(sum(steady) / (100.0 * len(steady)), 3), "peak_memory_mb": max(mem),
            "samples": len(rows)}

summary = {"device": json.loads((out / "device.json").read_text()), "benchmark": lines("bench.jsonl"),
           "benchmark_compile": lines("bench_compile.jsonl"), "dino_batch_sizes": lines("bench_batches.jsonl")}
for path in ("batched", "per_image"):
    rates = [round(r["images_per_s"], 1) for r in epochs("dino_" + path)]
    summary["dino_{}_images_per_s".format(path)] = rates
    steady = rates[-1] if rates else None  # the last epoch: past start-up and cudnn autotuning
    summary["dino_{}_hours_for_300_epochs".format(path)] = round(300 * 38400 / steady / 3600, 2) if steady else None
    summary["dino_{}_gpu".format(path)] = gpu("dino_" + path)
summary["dino_largest_batch_that_fits"] = max((r["batch_size"] for r in summary["dino_batch_sizes"]), default=None)
summary.update(unet_torchrun_ok=(out / "unet_ddp" / "results.json").is_file(),
               hw1_2_seconds=round(end - start, 1), hw1_2_masks=len(list((out / "masks").glob("*_mask.png"))),
               hw1_2_tiles=tiles, hw1_2_gpu=gpu("hw1_2"),
               hw1_1_seconds=round(p1_end - p1_start, 1), hw1_1_images=office_images,
               hw1_1_rows=max(0, len((out / "pred_p1.csv").read_text().splitlines()) - 1), hw1_1_gpu=gpu("hw1_1"),
               tta_flip_scale_seconds=round(tta_end - p1_end, 1),
               tta_flip_scale_masks=len(list((out / "masks_tta").glob("*_mask.png"))), tta_gpu=gpu("tta"))
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: v for k, v in summary.items() if not k.startswith("benchmark")}, indent=2))
EOF
