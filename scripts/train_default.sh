#!/usr/bin/env bash
# `make train-default`: the bundled default model's chain, end to end (configs/default/, configs/README.md "The
# default chain"), then the model is installed into src/sparrow/assets/default. About 1 h 45 min on this project's
# 2-core CPU machine; each stage's wall time is printed. A stage whose final/ exists is kept and one with
# checkpoints resumes, so an interrupted run continues where it stopped; delete runs/default/ to start over.
# Bit-for-bit reproduction needs the same CPU's BLAS code path and the machine to itself: on another CPU the weights
# differ from stage 1 on, and with other jobs on the cores 2-thread runs drift at the 8th digit
# (src/sparrow/assets/MODEL_CARD.md, "Reproducibility"). Compare a rerun with the installed model by
#   python scripts/compare_weights.py <copy of the committed src/sparrow/assets/default> runs/default/selector/final
#   SPARROW=.venv/bin/sparrow bash scripts/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SPARROW=${SPARROW:-.venv/bin/sparrow}
ASSETS=src/sparrow/assets/default
start=$(date +%s)
[ -f data/synthref/train/meta_expressions.json ] ||
  $SPARROW synth --out data/synthref --split train --videos 400 --seed 0 --workers 2 --quiet
for stage in 1_segmenter 2_segmenter_jitter 3_proposer 4_vlm 5_selector; do
  out=runs/default/${stage#*_}
  if [ -f $out/final/model.safetensors ]; then
    echo "$stage: kept $out/final"
    continue
  fi
  resume=""  # the selector stage has no checkpoints: run again, it reads back the tracklets.pt it linked
  [ -f $out/checkpoints/latest.json ] && resume="--resume"
  t0=$(date +%s)
  $SPARROW train --config configs/default/$stage.yaml --quiet $resume
  echo "$stage: $(( ($(date +%s) - t0) / 60 )) min"
done
rm -rf $ASSETS.new $ASSETS.old
cp -r runs/default/selector/final $ASSETS.new
[ -d $ASSETS ] && mv $ASSETS $ASSETS.old
mv $ASSETS.new $ASSETS
rm -rf $ASSETS.old
echo "train-default: $(( ($(date +%s) - start) / 60 )) min in all; installed $ASSETS"
