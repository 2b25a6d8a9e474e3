#!/usr/bin/env bash
# Checks for a lent GPU machine, as one short call (see docs/benchmarks.md, "On a GPU"):
# the prediction copy on CUDA gives the networks' outputs (tools/check_inference_copy.py),
# and seconds per click on the GPU, with the copy and without it (benchmarks/click_latency.py).
# The machine has no ../shared: copy GrabCut into the repo first and carry it:
#   mkdir -p .gpucheck && cp -r ../shared/datasets/GrabCut .gpucheck/
#   (run tool) command: bash tools/gpu_check.sh, carry: [".gpucheck"]
# Writes copy_check.json, latency-gpu.json and latency-gpu-plain.json to $OUT (or .).
# Environment: MODELS (default: every model of click_latency.py), IMAGES (5), CLICKS (5).
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
models=(${MODELS:-fbrs-lite resnet34_dh128 resnet50_dh128 resnet101_dh256 hrnet18_ocr64 hrnet32_ocr128})
status=0
python3 tools/check_inference_copy.py --device cuda --models "${models[@]}" \
  --out "$out/copy_check.json" || status=$?
for variant in "" --plain-network; do
  name=latency-gpu${variant:+-plain}.json
  python3 benchmarks/click_latency.py --device cuda --models "${models[@]}" \
    --images "${IMAGES:-5}" --clicks "${CLICKS:-5}" --data-root .gpucheck \
    $variant --out "$out/$name"
done
exit "$status"
