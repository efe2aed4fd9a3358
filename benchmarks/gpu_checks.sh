#!/usr/bin/env bash
# The GPU measurements issue 3 asks for, in one command for a lent device machine (H100/H200 image:
# python3 with CUDA PyTorch, transformers, accelerate, opencv; no diffusers, no PyAV, no internet).
#
# Prepare on the development machine, once (42 MB of wheels, kept out of git):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .wheels diffusers==0.42.1 av==18.1.0
#   echo /.wheels/ >> .git/info/exclude
# Then run there:  bash benchmarks/gpu_checks.sh   (device tool: carry [".wheels"])
#
# Prints: the vectorised similarity vs the reference's per-token GPU->CPU + cv2.matchTemplate loop
# (goal >= 100x), and the MMI overhead of an edit with an SD v1.4-architecture UNet at 512x512
# in fp16 (goal <= 1.03).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps --no-index .wheels/*.whl
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
echo "== similarity (8 frames, 64x64 maps, 77 tokens, 8 heads), fp32"
python3 benchmarks/bench_similarity.py --device cuda --repeat 50
echo "== MMI overhead, SD v1.4 architecture (random weights), 512x512, 8 frames, 10 steps, fp16"
python3 benchmarks/bench_mmi_overhead.py --device cuda --dtype fp16 --model sd14 --size 512 --frames 8 --steps 10 \
    --repeat 3
echo "== MMI overhead, tiny model, 64x64, 8 frames, 10 steps, fp32"
python3 benchmarks/bench_mmi_overhead.py --device cuda --model tiny --frames 8 --steps 10 --repeat 3
