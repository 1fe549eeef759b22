# Sourced by the scripts in this folder: where things are and how to launch a trainer.
#   HW1_DATA  dataset root in the course layout (default: data_2025)
#   RUNS      where run folders go (default: runs)
#   NGPUS     processes/GPUs per node; > 1 launches through torchrun (default: 1)
#   TORCHRUN_ARGS  extra torchrun flags for several nodes, e.g.
#             "--nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500" (default: --standalone)
#   PYTHON    interpreter (default: python3)
# A relative path in these variables (and in TA_BACKBONE, DINO_BACKBONE, SAM_CHECKPOINT, REPORT_DIR) is taken relative
# to the folder the script is run from; the defaults are inside the repository. Folders are created only by the
# commands that write into them (nothing is created when an input is missing).
# Any arguments given to a script are appended to every command it runs (later flags win), e.g. --epochs 10.
set -euo pipefail
for var in HW1_DATA RUNS TA_BACKBONE DINO_BACKBONE SAM_CHECKPOINT REPORT_DIR PYTHON; do
  value=${!var:-}  # PYTHON: a path (holding a /) only; a command name stays a name looked up on PATH
  if [ -n "$value" ] && [[ $value != /* ]] && { [ "$var" != PYTHON ] || [[ $value == */* ]]; }; then
    printf -v "$var" '%s/%s' "$PWD" "$value"
  fi
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HW1_DATA=${HW1_DATA:-data_2025}
RUNS=${RUNS:-runs}
NGPUS=${NGPUS:-1}
PYTHON=${PYTHON:-python3}
case $NGPUS in ''|*[!0-9]*|0) echo "error: NGPUS must be a positive integer, got '$NGPUS'" >&2; exit 2 ;; esac

launch() {  # launch SCRIPT.py ARGS...: one process, or NGPUS processes under torchrun
  local script=$1
  shift
  if [ "$NGPUS" -gt 1 ] || [ -n "${TORCHRUN_ARGS:-}" ]; then
    # shellcheck disable=SC2086  # TORCHRUN_ARGS is a list of flags
    "$PYTHON" -m torch.distributed.run ${TORCHRUN_ARGS:---standalone} --nproc_per_node="$NGPUS" "$script" "$@"
  else
    "$PYTHON" "$script" "$@"
  fi
}

# The report's snapshot images: the 2025 template names 0018/0065/0109 in its table and 0013/0065/0104 in its
# question; both sets are drawn (utils/segmentation.py SNAPSHOT_IMAGES). SNAPSHOT_IMAGES overrides.
SNAPSHOT_IMAGES=${SNAPSHOT_IMAGES:-0013_sat.jpg 0018_sat.jpg 0065_sat.jpg 0104_sat.jpg 0109_sat.jpg}

need() {  # need PATH WHAT: a clear error before hours of work when an input is missing
  if [ ! -e "$1" ]; then
    echo "error: $2 not found: $1 (see docs/data.md)" >&2
    exit 2
  fi
}
