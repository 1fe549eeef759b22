#!/usr/bin/env bash
# Every experiment of the report in order, then the report (docs/performance.md: expected times). Each step resumes when run
# again. Same environment variables as the other scripts (scripts/_launch.sh).
set -euo pipefail
here=$(dirname "$0")
bash "$here/p1_dino.sh"
bash "$here/p1_settings.sh"
bash "$here/p1_tsne.sh"
bash "$here/p2_unet.sh"
bash "$here/p2_deeplab.sh"
if [ -f "${SAM_CHECKPOINT:-$here/../checkpoints/sam_vit_h_4b8939.pth}" ]; then bash "$here/p2_sam.sh"; else
  echo "skipping SAM: no SAM checkpoint (see scripts/p2_sam.sh)"; fi
bash "$here/report.sh"
