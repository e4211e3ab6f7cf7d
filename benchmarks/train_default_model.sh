#!/usr/bin/env bash
# Train the default model's two patient-wise folds side by side with the bundled trainer (one CPU thread
# each): fold A trains on H&E patient C003 and validates on C004 (it is the shipped model), fold B the
# reverse. Both hold back the same 4 PAS tiles and train on the other 8, the 12 hubmap-16x tiles and 4
# synthetic regions. Settings: 3 µm/px, 160 px tiles (480 µm of tissue), 10 epochs of 640 tiles, about
# 35 min on 2 cores. µm/px come from benchmarks/shared-data-mpp.json: the kidney-he regions were
# exported at different zooms, so each image has its own, read off its scale bar (see models/README.md).
# Then installs fold A as models/hubmap-default, with both folds' figures in its card, and prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
HELD_PAS=10025,10102,10149,10165
mkdir -p bench-out/models bench-out/logs
for fold in A B; do
  if [ "$fold" = A ]; then val="C004,$HELD_PAS"; else val="C003,$HELD_PAS"; fi
  OMP_NUM_THREADS=1 .venv/bin/napari-hubmap train --data "$DATA" --mpp-file benchmarks/shared-data-mpp.json \
    --synthetic 4 --preset effnet-unet --out "bench-out/models/fold-$fold" --name hubmap-default \
    --target-mpp 3 --tile 160 --infer-tile 384 --batch 16 --samples-per-epoch 640 --epochs 10 --lr 2e-3 \
    --val-groups "$val" --workers 1 --overwrite --no-resume --events \
    > "bench-out/logs/fold-$fold.jsonl" 2> "bench-out/logs/fold-$fold.err" &
done
wait
.venv/bin/python benchmarks/eval_default_model.py --ship bench-out/models/fold-A
