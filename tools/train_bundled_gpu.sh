#!/usr/bin/env bash
# Train the bundled fbrs-lite model on a lent GPU machine (see docs/model_card.md).
# Expects the packed data of tools/pack_training_data.py in .trainpack/ and writes the run
# (weights snapshot, log) to $OUT/run. Usage: bash tools/train_bundled_gpu.sh SECONDS
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, scipy, skimage, PIL; print('torch', torch.__version__, torch.cuda.is_available())"
python3 -m napari_fbrs train --data .trainpack/coco,.trainpack/synth --out "$OUT/run" \
  --init "${2:-.trainpack/init.pt}" --device cuda --batch-size 32 --crop 320 --lr "${3:-5e-4}" \
  --steps 20000 --workers 14 --time-limit "${1:-420}" --checkpoint-every 400 --log-every 50 \
  --keep-snapshots 1
ls -la "$OUT/run"
