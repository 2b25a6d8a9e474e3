#!/usr/bin/env bash
# Train the bundled fbrs-lite model on a lent GPU machine (see docs/model_card.md).
# Expects the packed data of tools/pack_training_data.py in .trainpack/ and writes the run
# (weight snapshots, log) to $OUT/run; last.pt (with the optimiser, > 16 MiB) stays there.
# Usage: bash tools/train_bundled_gpu.sh SECONDS [INIT] [LR]   (INIT: default fbrs-lite)
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
nproc
python3 -c "import torch, scipy, skimage, PIL; print('torch', torch.__version__, torch.cuda.is_available())"
workers=$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))
data=.trainpack/coco,.trainpack/synth
if [ -d .trainpack/stack ]; then data="$data,.trainpack/stack"; fi
python3 -m napari_fbrs train --data "$data" --out "$OUT/run" \
  --init "${2:-fbrs-lite}" --device cuda --batch-size 32 --crop 320 --lr "${3:-3e-4}" \
  --steps 20000 --workers "$workers" --time-limit "${1:-420}" --checkpoint-every 2000 \
  --log-every 100 --keep-snapshots 2
ls -la "$OUT/run"
