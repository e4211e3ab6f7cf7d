#!/usr/bin/env bash
# Train the default model's two patient-wise folds (see benchmarks/eval_default_model.py) and copy
# fold A into models/hubmap-default. Two CPU processes of one thread each; about 70 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
HELD_PAS=10025,10102,10149,10165
mkdir -p bench-out/models bench-out/logs
for fold in A B; do
  if [ "$fold" = A ]; then val="C004,$HELD_PAS"; else val="C003,$HELD_PAS"; fi
  OMP_NUM_THREADS=1 .venv/bin/napari-hubmap train --data "$DATA" --mpp kidney-he=0.45 --mpp pas-tiles=0.5 \
    --mpp hubmap-16x=8 --synthetic 4 --preset effnet-unet --out "bench-out/models/fold-$fold" --name hubmap-default \
    --epochs 10 --samples-per-epoch 256 --batch 8 --tile 256 --val-groups "$val" --workers 1 --overwrite --events \
    > "bench-out/logs/fold-$fold.jsonl" 2> "bench-out/logs/fold-$fold.err" &
done
wait
rm -rf models/hubmap-default && cp -r bench-out/models/fold-A models/hubmap-default
.venv/bin/python benchmarks/eval_default_model.py
