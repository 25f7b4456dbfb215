#!/usr/bin/env bash
# Issue 10 item 3: segmenter -> proposer -> vlm, with and without identity prompts (configs/grounding/), then the
# grounding probe on each trained model; for the identity arm also a vlm stage on fresh SynthRef clips (item 4).
# Needs data/synthref/train (400 videos, seed 0) and data/synthref/test (seed 0).
# Usage: bash scripts/run_grounding_identity.sh [PYTHON] [ARM ...]   (arms: identity plain; resumes stages that
# have checkpoints; the two arms can run as two parallel invocations)
set -euo pipefail
PY=${1:-.venv/bin/python}
shift || true
ARMS=${*:-identity plain}
export PYTHONPATH=src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for arm in $ARMS; do
  for stage in segmenter proposer vlm vlm_fresh; do  # vlm_fresh: only where configs/grounding/vlm_fresh_<arm>.yaml exists
    [ -f configs/grounding/${stage}_$arm.yaml ] || continue
    if [ ! -f runs/grounding/$arm/$stage/final/model.safetensors ]; then
      resume=""
      [ -f runs/grounding/$arm/$stage/checkpoints/latest.json ] && resume="--resume"
      echo "== $arm $stage $(date +%T)"
      /usr/bin/time -f "%e s wall, %U s user" nice -n 10 "$PY" -m sparrow train --config configs/grounding/${stage}_$arm.yaml --quiet $resume
    fi
  done
done
for arm in $ARMS; do
  for stage in vlm vlm_fresh; do  # SAM2 is frozen after its stage: the vlm models carry its features
    model=runs/grounding/$arm/$stage/final
    if [ -f $model/model.safetensors ] && [ ! -f runs/grounding/probe_${arm}_$stage.json ]; then
      echo "== probe $arm $stage $(date +%T)"
      nice -n 10 "$PY" benchmarks/probe_grounding.py --model $model --data data/synthref/test \
        --probe-data data/synthref/train --videos 40 --json runs/grounding/probe_${arm}_$stage.json \
        > runs/grounding/probe_${arm}_$stage.txt
    fi
  done
done
