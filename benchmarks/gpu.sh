#!/usr/bin/env bash
# The large-catalogue measurements on one lent GPU, in one run of under 10 minutes: collab's training steps on a
# real dataset (optional) and every stage of benchmarks/scale.py at 1M items / 10M interactions (read, collab and
# train steps, quantize, assign-codes, trie, decoding), each written into BENCHMARKS.md and benchmarks/results/.
#
#   bash benchmarks/gpu.sh [DATA_DIR]
#
# DATA_DIR: a dataset for benchmarks/collab_steps.py (e.g. Amazon Toys; section collab-steps-NAME-gpu). The scale
# run writes section scale-stages-gpu. Knobs (environment): DEVICE (cuda), ITEMS (1000000), USERS (690000, ~10M
# interactions), DECODE_USERS (20000), STEPS (50), PYTHON (python3). Each part has its own time limit, so that one
# slow part cannot take the others' time: 150 s for the collab steps, 420 s for the scale stages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
ITEMS=${ITEMS:-1000000}
USERS=${USERS:-690000}
DECODE_USERS=${DECODE_USERS:-20000}
STEPS=${STEPS:-50}
export HF_HUB_OFFLINE=1

"$PY" -c 'import torch; print("torch", torch.__version__, "| cuda:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' >&2
if [ -n "${1:-}" ]; then
    name="$(basename "$1")-gpu"
    [ "$DEVICE" = cuda ] || name="$(basename "$1")-$DEVICE"
    timeout 150 "$PY" benchmarks/collab_steps.py --data "$1" --name "$name" --device "$DEVICE" --steps "$STEPS" \
        --negatives 1024 4096 16384 || echo "collab steps: failed or timed out (exit $?)" >&2
fi
section=scale-stages-gpu
[ "$DEVICE" = cuda ] || section="scale-stages-$DEVICE-smoke"
timeout 420 "$PY" benchmarks/scale.py --items "$ITEMS" --users "$USERS" --decode-users "$DECODE_USERS" \
    --steps "$STEPS" --device "$DEVICE" --limit-mib 65536 --section "$section" \
    || echo "scale stages: failed or timed out (exit $?)" >&2
