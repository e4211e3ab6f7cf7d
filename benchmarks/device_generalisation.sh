#!/usr/bin/env bash
# Train and score runs of benchmarks/generalisation.py side by side on a lent GPU machine, within a time limit.
#
# Here:   python benchmarks/compact_shared_data.py .devdata      (git-ignored; the data as the device can take it)
#         and the wheels that machine lacks in .whl (segmentation-models-pytorch, albumentations, zarr, shapely, ...)
# There:  bash benchmarks/device_generalisation.sh               (device run, carrying .devdata and .whl)
#
# RUNS (the runs, as generalisation.py names them), DEADLINE (seconds after the start at which unfinished trainers
# are stopped: each keeps its best epoch so far; the card and the log say how far it got), WORKERS (loader
# processes per run). Every run that has a model is scored on the GPU (float16 autocast); $OUT gets the scores,
# logs and cards (results.tar.gz) and the weights of the runs in SHIP (split in 15 MB parts).
set -u
T0=$(date +%s)
DEADLINE=${DEADLINE:-455}
WORKERS=${WORKERS:-2}
PY=${PY:-python3}
RUNS=${RUNS:-"cv-0@s1920 cv-1@s1920 cv-2@s1920 cv-3@s1920 cv-4@s1920 loso-hubmap-pas@s1920 loso-pas-tiles@s1920 loso-C003@s1920 loso-C004@s1920 all@s1920 cv-2@h200"}
SHIP=${SHIP:-"all@s1920"}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export NAPARI_HUBMAP_DATA=$PWD/.devdata/data OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
cp .devdata/shared-data-mpp.json benchmarks/shared-data-mpp.json  # the device's copy of the tree only
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 4
$PY benchmarks/generalisation.py train $RUNS --threads 1 --workers "$WORKERS" > /tmp/train.out 2>&1 &
trainers=$!
while kill -0 $trainers 2>/dev/null; do
  if [ $(( $(date +%s) - T0 )) -ge "$DEADLINE" ]; then
    echo "deadline: stopping the trainers"
    pkill -TERM -f "napari_hubmap.cli train"; sleep 5; pkill -KILL -f "napari_hubmap.cli train"
    break
  fi
  sleep 5
done
wait $trainers 2>/dev/null
cat /tmp/train.out
echo "trained at $(( $(date +%s) - T0 )) s"
models=bench-out/generalisation
for run in $RUNS; do
  echo "$run: $(grep -c '"event": "epoch"' "$models/$run.jsonl" 2>/dev/null) epochs"
  [ -f "$models/$run/model.safetensors" ] && $PY benchmarks/generalisation.py score "$run" --device cuda > "/tmp/score.$run.out" 2>&1 &
done
wait
cat /tmp/score.*.out
echo "scored at $(( $(date +%s) - T0 )) s"
mkdir -p "$OUT"
tar czf "$OUT/results.tar.gz" benchmarks/generalisation-scores $models/*.jsonl $models/*.err $models/*/card.json /tmp/train.out 2>/dev/null
for run in $SHIP; do
  [ -f "$models/$run/model.safetensors" ] && split -b 15000000 -d "$models/$run/model.safetensors" "$OUT/${run/@/_}.part"
done
ls -la "$OUT"
echo "done at $(( $(date +%s) - T0 )) s"
