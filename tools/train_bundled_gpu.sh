#!/usr/bin/env bash
# Train the bundled fbrs-lite model on a lent GPU machine (see docs/model_card.md).
# Expects the packed data of tools/pack_training_data.py in .trainpack/ and writes the run
# (weight snapshots, log) to $OUT/run; last.pt (with the optimiser, > 16 MiB) stays there.
# Usage: bash tools/train_bundled_gpu.sh SECONDS [INIT] [LR] [PASTE]   (INIT: default fbrs-lite)
# (INIT .trainpack/init_lite2.pt trains the larger fbrs_lite2: the file names its architecture.)
# Environment: STACK=1 adds .trainpack/stack; SEED (0) picks the sample sequence (a run from
# step 0 with the same seed sees the same crops as the runs before it); STEPS (20000, or fewer when
# --time-limit cuts the schedule) sets the run's length; BATCH (32) and CROP (320) size the samples; CKPT_EVERY (default 2000) and KEEP (default 2)
# set the snapshots; LAST_COPY=PATH keeps a copy of last.pt (fp32, with the optimiser); FP16=1 exports every snapshot to $OUT/step_<n>.pt while training runs
# (fp16: 6.7 MB each for fbrs_lite, 9.6 MB for fbrs_lite2), so that snapshots come back even
# when the call's time limit cuts the run, and drops the fp32 files at the end.
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
nproc
python3 -c "import torch, scipy, skimage, PIL; print('torch', torch.__version__, torch.cuda.is_available())"
workers=$(( $(nproc) > 2 ? $(nproc) - 1 : 1 ))
data=.trainpack/coco,.trainpack/synth
if [ "${STACK:-0}" = 1 ]; then data="$data,.trainpack/stack"; fi
export_snapshots() {  # fp16 copies of the snapshots written so far (a snapshot still being written fails and is retried)
  for f in "$OUT"/run/step_*.pt; do
    [ -e "$f" ] && [ ! -e "$OUT/$(basename "$f")" ] || continue
    python3 -m napari_fbrs train --export "$f" --out "$OUT/$(basename "$f")" >/dev/null 2>&1 || true
  done
}
python3 -m napari_fbrs train --data "$data" --out "$OUT/run" \
  --init "${2:-fbrs-lite}" --device cuda --batch-size "${BATCH:-32}" --crop "${CROP:-320}" --lr "${3:-3e-4}" \
  --paste "${4:-0}" --seed "${SEED:-0}" --steps "${STEPS:-20000}" --workers "$workers" --time-limit "${1:-420}" \
  --checkpoint-every "${CKPT_EVERY:-2000}" --log-every 100 --keep-snapshots "${KEEP:-2}" &
trainer=$!
if [ "${FP16:-0}" = 1 ]; then
  while kill -0 "$trainer" 2>/dev/null; do sleep 10; export_snapshots; done
fi
wait "$trainer"
if [ -n "${LAST_COPY:-}" ]; then cp "$OUT/run/last.pt" "$LAST_COPY"; fi  # a warm machine's next call can resume from it
if [ "${FP16:-0}" = 1 ]; then
  export_snapshots
  rm -f "$OUT"/run/*.pt
fi
ls -la "$OUT" "$OUT/run"
