#!/usr/bin/env bash
# Train the default model's two patient-wise folds side by side (one CPU thread each; see
# benchmarks/eval_default_model.py), copy fold A into models/hubmap-default, and score both folds.
# Working scale 3 µm/px, 160 px tiles (480 µm of tissue), 5 epochs of 640 tiles: ~20 min on 2 cores.
# kidney-he is 0.94 µm/px by its own scale bar (106 px = 100 µm), not the ~0.45 its README says.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
HELD_PAS=10025,10102,10149,10165
mkdir -p bench-out/models bench-out/logs
for fold in A B; do
  if [ "$fold" = A ]; then val="C004,$HELD_PAS"; else val="C003,$HELD_PAS"; fi
  OMP_NUM_THREADS=1 .venv/bin/napari-hubmap train --data "$DATA" --mpp kidney-he=0.94 --mpp pas-tiles=0.5 \
    --mpp hubmap-16x=8 --synthetic 4 --preset effnet-unet --out "bench-out/models/fold-$fold" --name hubmap-default \
    --target-mpp 3 --tile 160 --infer-tile 384 --batch 16 --samples-per-epoch 640 --epochs 5 --lr 2e-3 \
    --val-groups "$val" --workers 1 --overwrite --no-resume --events \
    > "bench-out/logs/fold-$fold.jsonl" 2> "bench-out/logs/fold-$fold.err" &
done
wait
rm -rf models/hubmap-default && cp -r bench-out/models/fold-A models/hubmap-default
.venv/bin/python benchmarks/eval_default_model.py
