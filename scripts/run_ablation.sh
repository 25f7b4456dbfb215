#!/usr/bin/env bash
# The TSF x BOX ablation of docs/results.md, end to end (about 1 h 30 min on 2 CPU cores after the chain):
#   make train-default            # the default chain into runs/default/ (configs/default/)
#   bash scripts/run_ablation.sh  # 4 vlm-stage rows, 6 evaluated rows, tables with intervals, plots
# Every row is the default chain's vlm stage around runs/default/selector/final's SAM2, proposer and track selector,
# with the same data, steps, seed and optimizer (configs/ablation/). TEST=data/synthref/test scores all 100 test
# videos (about four times as long).
set -euo pipefail
cd "$(dirname "$0")/.."
SPARROW=${SPARROW:-.venv/bin/sparrow}
PY=${PY:-.venv/bin/python}
TEST=${TEST:-data/synthref30/test}
MODE=${MODE:-perframe}
[ -d "$TEST" ] || $SPARROW synth --out "$(dirname "$TEST")" --split test --videos 30 --seed 0 --quiet
[ -d data/tsf/synthref_train ] || $SPARROW tsf build --data data/synthref/train --out data/tsf/synthref_train --no-progress
for row in seg_only box tsf_seg_only tsf_box; do
  [ -d runs/ablation/$row/final ] || $SPARROW train --config configs/ablation/$row.yaml --quiet
done
evaluate() {  # name model tsf
  $SPARROW infer --data "$TEST" --out runs/ablation/pred_$1 --model runs/ablation/$2/final --mode "$MODE" --tsf "$3" --quiet
  $SPARROW eval rvos --pred runs/ablation/pred_$1 --gt "$TEST" --format mevis --report runs/ablation/report_$1 > /dev/null
}
evaluate seg_only seg_only off
evaluate box box off
evaluate tsf_seg_only tsf_seg_only off
evaluate tsf_box tsf_box off
evaluate tsf_box_self tsf_box self
evaluate tsf_box_boxes tsf_box boxes
$PY scripts/ablation_report.py --out runs/ablation/tables.md --plots docs/images \
  "[SEG] only=runs/ablation/report_seg_only" "+[BOX]=runs/ablation/report_box" \
  "+TSF (training), [SEG] only=runs/ablation/report_tsf_seg_only" "+TSF (training) +[BOX]=runs/ablation/report_tsf_box" \
  "both + self-TSF at inference=runs/ablation/report_tsf_box_self" "both + TSF from boxes at inference=runs/ablation/report_tsf_box_boxes" \
  --pair "[SEG] only=>+[BOX]" --pair "[SEG] only=>+TSF (training), [SEG] only" --pair "+[BOX]=>+TSF (training) +[BOX]" \
  --pair "+TSF (training) +[BOX]=>both + self-TSF at inference" --pair "+TSF (training) +[BOX]=>both + TSF from boxes at inference"
