#!/usr/bin/env bash
# Quickstart: MovieLens-100K (shipped inside the recbole wheel) through the whole pipeline,
# then the comparison table of the generator (MSCGRec) and SASRec on the test split.
#
#   examples/quickstart.sh [WORK_DIR]        (default: runs/quickstart)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:-runs/quickstart}
MSCG=${MSCG:-mscg}

$MSCG prepare recbole:ml-100k -o "$WORK/data" --force
"$HERE/pipeline.sh" "$WORK/data" "$WORK"
