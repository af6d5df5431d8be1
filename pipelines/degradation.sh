#!/usr/bin/env bash
# The degradation experiment (He et al. 2015, sec. 4.2): plain and residual networks of depth 20 and 56, same data
# and budget, on CPU → one MLflow experiment `degradation` → table, training curves and verdict in DOCS.
# Usage: pipelines/degradation.sh [OUT] [DOCS]   (defaults: degradation, <repo>/docs/degradation)
# Safe to rerun: the archive in OUT/cxr is kept; OUT's MLflow store and work files start afresh. MLflow writes to
# OUT/mlflow.db (artifacts in OUT/mlartifacts) unless MLFLOW_TRACKING_URI is set; the report then reads the latest
# finished fit of each network there.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-degradation}"
docs="$(mkdir -p "${2:-$repo/docs/degradation}" && cd "${2:-$repo/docs/degradation}" && pwd)"
medres="${MEDRES:-medres}"
networks=(plain20 plain56 resnet20 resnet56)

mkdir -p "$out"
cd "$out"
rm -rf mlflow.db mlartifacts medres_work
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}"
# One core computes, the data worker decodes DICOM on the other: two compute threads plus a worker oversubscribe
# two cores, and OpenMP threads that wait for a busy core slow training down several times.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [[ ! -f cxr/labels.csv ]]; then
    rm -rf cxr
    "$medres" synth chest-xray --out cxr --patients 300 --seed 0 --image_size 64
fi
for network in "${networks[@]}"; do
    "$medres" fit --config "$repo/configs/degradation.yaml" --data.root cxr \
        --model.backbone "$network" --trainer.logger.init_args.run_name "$network"
done
"$medres" report-degradation --experiment degradation --out "$docs" --networks "[$(IFS=,; echo "${networks[*]}")]"

mlflow="$(dirname "$(command -v "$medres")")/mlflow"
echo "Runs:   $mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
echo "Report: $docs/README.md"
