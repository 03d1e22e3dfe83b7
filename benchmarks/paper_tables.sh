#!/usr/bin/env bash
# The paper's ablation tables on synthetic data, each through the whole pipeline (kfp.local, pipelines/run_local.py)
# with the small-scale recipe (the `demo` grid's base) and 3 seeds, tracked in one MLflow store; then one report
# per table (`mdfnet report`: mean ± sd over seeds, per-run intervals, paired Δ test AP against the reference row).
#
#   benchmarks/paper_tables.sh [WORKDIR] [TABLES...]     # default: data/paper-tables; fusion features backbones variants16
#
# TABLES: fusion (paper-fusion), features (paper-features), backbones (paper-backbones, CPU-sized: see README),
# variants16 (paper-variants at 128 px, stride 8: the paper's 16×16 map), variants8 (paper-variants at 64 px: 8×8),
# clinicalmap16 (the clinical-map grid, ours: MSF-Net 3D with model.clinical_map=mean_norm, at variants16's
# geometry and into its experiment, so the variants16 report holds it beside the paper's rows; run after it).
# Sources: 600 synthetic studies (data seed $DATA_SEED, default 0) at 160 px, so 64 and 128 px both downsample.
# Wall time per table goes to WORKDIR/<table>.time; reports to WORKDIR/report-<table>/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="$(realpath -m "${1:-data/paper-tables}")"; shift || true
TABLES=("$@"); [ ${#TABLES[@]} -gt 0 ] || TABLES=(fusion features backbones variants16)
DATA_SEED="${DATA_SEED:-0}"; SEEDS="${SEEDS:-0 1 2}"; PAR="${PARALLELISM:-2}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$WORK/mlflow.db}"
mkdir -p "$WORK"
SRC="$WORK/sources-d$DATA_SEED"
[ -f "$SRC/.done" ] || { "$PY" -m mdfnet.cli synth "$SRC" --studies 600 --seed "$DATA_SEED" --image-size 160 \
                           && touch "$SRC/.done"; }
# The small-scale recipe: the `demo` grid's base (pipelines/grids/demo.yaml), one owner.
mapfile -t BASE < <("$PY" -c "
from pathlib import Path
from mdfnet.pipeline.grids import load_grids
print('\n'.join(str(s) for s in load_grids(Path('$ROOT/pipelines/grids'))['demo']['base']))")
run_table() {  # name grid image_size [extra override...]; EXP=<table> puts the runs into that table's experiment
  local name=$1 grid=$2 size=$3 args=() s exp="${EXP:-$1}"
  shift 3
  for s in "${BASE[@]}" "$@"; do args+=(--set "$s"); done
  for s in $SEEDS; do args+=(--seeds "$s"); done
  local t0=$SECONDS
  "$PY" "$ROOT/pipelines/run_local.py" --source "$SRC" --workdir "$WORK/$name-d$DATA_SEED" --grid "$grid" \
      --experiment "paper-$exp-d$DATA_SEED" --model-name "paper-$exp" --parallelism "$PAR" \
      --preprocess-set "image_size=$size" --preprocess-set workers=1 "${args[@]}"
  echo "$((SECONDS - t0))" > "$WORK/$name-d$DATA_SEED.time"
  "$PY" -m mdfnet.cli report --experiment "paper-$exp-d$DATA_SEED" --out "$WORK/report-$exp-d$DATA_SEED"
}
for t in "${TABLES[@]}"; do
  case $t in
    fusion) run_table fusion paper-fusion 64 ;;
    features) run_table features paper-features 64 ;;
    backbones) run_table backbones paper-backbones 64 ;;
    variants8) run_table variants8 paper-variants 64 ;;
    variants16) run_table variants16 paper-variants 128 "model.anchor_sizes=[16,32,64,128]" ;;  # anchors ×2
    clinicalmap16) EXP=variants16 run_table clinicalmap16 clinical-map 128 "model.anchor_sizes=[16,32,64,128]" ;;
    *) echo "unknown table $t (fusion features backbones variants8 variants16 clinicalmap16)" >&2; exit 2 ;;
  esac
done
