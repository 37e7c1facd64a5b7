#!/usr/bin/env bash
# Run every mscg stage on a dataset in the documented format and compare the generator with SASRec.
#
#   examples/pipeline.sh DATA_DIR WORK_DIR
#
# DATA_DIR holds items.jsonl + interactions.jsonl (see README). WORK_DIR receives every stage's
# artifact, WORK_DIR/metrics.json ({"sasrec": {...}, "mscgrec": {...}, ...}; test split),
# WORK_DIR/preferred.json (the recommender validation prefers: the best validation NDCG@10, with every one's),
# WORK_DIR/stage_seconds.json (wall time of each stage) and WORK_DIR/stage_peak_mib.json (each stage's peak resident
# memory). Reruns replace earlier outputs.
# The generators train `mscg train`'s full default regime on a GPU; on a CPU they get a budget of GEN_EPOCHS
# epochs (default 30 of the regime's 100, so that the quickstart stays under half an hour on 2 cores; said on
# stderr at the end).
# Knobs (environment): SEED (0), DEVICE (auto: the GPU when present), GEN_EPOCHS (30 on a CPU; on a GPU: unset,
# the default regime), SASREC_EPOCHS (200), BEAM (20), COLLAB_CODES (text-started, or plain: which SASRec's item
# table the collab codes quantize), MSCG (the mscg command to run), and extra flags for one
# stage: COLLAB_ARGS, IMAGE_ARGS (quantize --method rq-dino, e.g. "--epochs 2"), TRAIN_ARGS (both generators,
# e.g. "--d-model 256"). Besides MSCGRec and SASRec it trains a text-started SASRec (`collab --init-embeddings`, its
# item table started from the text embeddings) and evaluates the fused rankings of MSCGRec with each SASRec
# (`mscg fuse`). The collab codes come from the text-started SASRec (the paper's come from a plain one,
# COLLAB_CODES=plain): chosen on validation on MovieLens-100K, Amazon Scientific and Amazon Toys (BENCHMARKS.md).
set -euo pipefail

DATA=${1:?usage: examples/pipeline.sh DATA_DIR WORK_DIR}
WORK=${2:?usage: examples/pipeline.sh DATA_DIR WORK_DIR}
SEED=${SEED:-0}
DEVICE=${DEVICE:-auto}
on_gpu=0
case "$DEVICE" in
    cuda*) on_gpu=1 ;;
    auto) if python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then on_gpu=1; fi ;;
esac
if [ "$on_gpu" = 1 ]; then GEN_EPOCHS=${GEN_EPOCHS:-}; else GEN_EPOCHS=${GEN_EPOCHS:-30}; fi
GEN_BUDGET=()
if [ -n "$GEN_EPOCHS" ]; then GEN_BUDGET=(--epochs "$GEN_EPOCHS"); fi
SASREC_EPOCHS=${SASREC_EPOCHS:-200}
COLLAB_CODES=${COLLAB_CODES:-text-started}
case "$COLLAB_CODES" in
    text-started) COLLAB_EMB="$WORK/emb_collab_text_started" ;;
    plain) COLLAB_EMB="$WORK/emb_collab" ;;
    *) echo "error: COLLAB_CODES=$COLLAB_CODES must be text-started or plain" >&2; exit 2 ;;
esac
BEAM=${BEAM:-20}
MSCG=${MSCG:-mscg}
read -r -a COLLAB_EXTRA <<< "${COLLAB_ARGS:-}"
read -r -a IMAGE_EXTRA <<< "${IMAGE_ARGS:-}"
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
COMMON=(--seed "$SEED" --force)

mkdir -p "$WORK"
TIMES="$WORK/stage_seconds.tsv"
: > "$TIMES"

stage() {  # stage NAME ARGS...: run one mscg command and record its wall time and peak memory
    local name=$1; shift
    echo "== $name: $MSCG $*" >&2
    if [ "$1" = evaluate ]; then
        timed "$name" "$@" > /dev/null  # its table: the comparison at the end shows every run in one
    else
        timed "$name" "$@"
    fi
}

timed() {  # timed NAME ARGS...: $MSCG ARGS, its seconds and peak resident MiB appended to $TIMES
    local name=$1; shift
    # shellcheck disable=SC2086  # MSCG may be a command with arguments ("python -m mscg")
    python3 -c '
import resource, subprocess, sys, time
times, name, *command = sys.argv[1:]
start = time.perf_counter()
code = subprocess.call(command)
seconds = time.perf_counter() - start
peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
if code == 0:
    with open(times, "a") as f:
        f.write(f"{name}\t{seconds:.1f}\t{peak_mib:.0f}\n")
sys.exit(code)' "$TIMES" "$name" $MSCG "$@"
}

has_images=0
if grep -q '"image"[[:space:]]*:' "$DATA/items.jsonl"; then has_images=1; fi

stage embed-text embed --modality text -d "$DATA" -o "$WORK/emb_text" --device "$DEVICE" "${COMMON[@]}"
stage collab collab -d "$DATA" -o "$WORK/emb_collab" --model-out "$WORK/sasrec" --epochs "$SASREC_EPOCHS" \
    --device "$DEVICE" "${COMMON[@]}" ${COLLAB_EXTRA[@]+"${COLLAB_EXTRA[@]}"}
stage collab-text-started collab -d "$DATA" -o "$WORK/emb_collab_text_started" --model-out "$WORK/sasrec_text_started" \
    --init-embeddings "$WORK/emb_text" --epochs "$SASREC_EPOCHS" --device "$DEVICE" "${COMMON[@]}" \
    ${COLLAB_EXTRA[@]+"${COLLAB_EXTRA[@]}"}
stage quantize-text quantize --modality text --embeddings "$WORK/emb_text" -o "$WORK/q_text" "${COMMON[@]}"
stage quantize-collab quantize --modality collab --embeddings "$COLLAB_EMB" -o "$WORK/q_collab" "${COMMON[@]}"
quantizers=(-q "$WORK/q_text" -q "$WORK/q_collab")
if [ "$has_images" = 1 ]; then
    stage quantize-image quantize --modality image --method rq-dino -d "$DATA" -o "$WORK/q_image" --skip-bad-images \
        --device "$DEVICE" "${COMMON[@]}" ${IMAGE_EXTRA[@]+"${IMAGE_EXTRA[@]}"}
    quantizers+=(-q "$WORK/q_image")
fi
stage assign-codes assign-codes -d "$DATA" "${quantizers[@]}" -o "$WORK/codes" --skip-bad-images --device "$DEVICE" \
    "${COMMON[@]}"
stage train train -d "$DATA" --codes "$WORK/codes" -o "$WORK/mscgrec" ${GEN_BUDGET[@]+"${GEN_BUDGET[@]}"} --beam-size "$BEAM" \
    --device "$DEVICE" "${COMMON[@]}" ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"}
if [ "$has_images" = 1 ]; then
    stage train-image-only train -d "$DATA" --codes "$WORK/codes" -o "$WORK/image_only" --modalities image \
        --decode image ${GEN_BUDGET[@]+"${GEN_BUDGET[@]}"} --beam-size "$BEAM" --device "$DEVICE" "${COMMON[@]}" \
        ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"}
fi

stage fuse fuse "$WORK/mscgrec" "$WORK/sasrec" -d "$DATA" -o "$WORK/fused" --device "$DEVICE" "${COMMON[@]}"
stage fuse-text-started fuse "$WORK/mscgrec" "$WORK/sasrec_text_started" -d "$DATA" -o "$WORK/fused_text_started" \
    --device "$DEVICE" "${COMMON[@]}"
models=(sasrec sasrec_text_started mscgrec fused fused_text_started)
if [ "$has_images" = 1 ]; then models+=(image_only); fi
entries=()
for name in "${models[@]}"; do
    stage "evaluate-${name//_/-}" evaluate "$WORK/$name" -d "$DATA" -o "$WORK/eval_$name.json" --device "$DEVICE" \
        --force
    entries+=("$name=$WORK/eval_$name.json")
    # the validation split decides which one to use (the test split only reports)
    stage "validate-${name//_/-}" evaluate "$WORK/$name" -d "$DATA" --split valid -o "$WORK/valid_$name.json" \
        --device "$DEVICE" --force
done

$MSCG --quiet compare "${entries[@]}" -o "$WORK/metrics.json" --force  # the one table (stdout); "wrote" below
python3 - "$TIMES" "$WORK/stage_seconds.json" "$WORK/stage_peak_mib.json" <<'PY'
import json, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines() if line]
json.dump({name: float(seconds) for name, seconds, _ in rows}, open(sys.argv[2], "w"), indent=2)
json.dump({name: int(peak) for name, _, peak in rows}, open(sys.argv[3], "w"), indent=2)
PY
rm -f "$TIMES"
python3 - "$WORK" "${models[@]}" <<'PY'
import json, sys
work, names = sys.argv[1], sys.argv[2:]
valid = {name: json.load(open(f"{work}/valid_{name}.json"))["ndcg@10"] for name in names}
best = max(names, key=lambda name: valid[name])  # ties: the first, the simplest
test = json.load(open(f"{work}/eval_{best}.json"))
json.dump({"recommender": best, "model": f"{work}/{best}", "metric": "ndcg@10", "valid": valid,
           "test": {k: test[k] for k in ("recall@10", "ndcg@10")}}, open(f"{work}/preferred.json", "w"), indent=2)
print(f"validation prefers {best} (valid NDCG@10 {valid[best]:.4f}; "
      + ", ".join(f"{n} {v:.4f}" for n, v in valid.items() if n != best)
      + f"): test Recall@10 {test['recall@10']:.4f}, NDCG@10 {test['ndcg@10']:.4f}; use {work}/{best}",
      file=sys.stderr)
PY
echo "wrote $WORK/metrics.json, $WORK/preferred.json, $WORK/stage_seconds.json and $WORK/stage_peak_mib.json" >&2
if [ -n "$GEN_EPOCHS" ]; then
    echo "budget: the generators trained at most $GEN_EPOCHS epochs, the learning rate decaying over those (GEN_EPOCHS;" \
         "\`mscg train\` alone, and this script on a GPU, use the full default regime of up to 100); see README" \
         "\"How well it does\"" >&2
fi
