#!/usr/bin/env bash
# Train the bundled fbrs-lite model on a lent GPU machine (see docs/model_card.md).
# Expects the packed data of tools/pack_training_data.py in .trainpack/ and writes the run
# (weight snapshots, log) to $OUT/run; last.pt (with the optimiser, > 16 MiB) stays there.
# Usage: bash tools/train_bundled_gpu.sh SECONDS [INIT] [LR] [PASTE]   (INIT: default fbrs-lite)
# (INIT .trainpack/init_lite2.pt trains the larger fbrs_lite2: the file names its architecture.)
# Environment: STACK=1 adds .trainpack/stack; BATCH (32) and CROP (320) size the samples; CKPT_EVERY (default 2000) and KEEP (default 2)
# set the snapshots; FP16=1 exports every snapshot to $OUT/step_<n>.pt (fp16, 6.7 MB each,
# so up to 7 come back) and drops the fp32 files.
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
nproc
python3 -c "import torch, scipy, skimage, PIL; print('torch', torch.__version__, torch.cuda.is_available())"
workers=$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))
data=.trainpack/coco,.trainpack/synth
if [ "${STACK:-0}" = 1 ]; then data="$data,.trainpack/stack"; fi
python3 -m napari_fbrs train --data "$data" --out "$OUT/run" \
  --init "${2:-fbrs-lite}" --device cuda --batch-size "${BATCH:-32}" --crop "${CROP:-320}" --lr "${3:-3e-4}" \
  --paste "${4:-0}" --steps 20000 --workers "$workers" --time-limit "${1:-420}" \
  --checkpoint-every "${CKPT_EVERY:-2000}" --log-every 100 --keep-snapshots "${KEEP:-2}"
if [ "${FP16:-0}" = 1 ]; then
  for f in "$OUT"/run/step_*.pt; do
    python3 -m napari_fbrs train --export "$f" --out "$OUT/$(basename "$f")"
  done
  rm -f "$OUT"/run/*.pt
fi
ls -la "$OUT" "$OUT/run"
