#!/usr/bin/env bash
# Synthetic chest X-ray archive → fit (CPU profile) → registered model → @champion → scored archive.
# Safe to rerun: it starts from an empty OUT folder. Usage: pipelines/chest_xray_demo.sh [OUT] [PATIENTS]
# MLflow writes to OUT/mlflow.db (artifacts in OUT/mlartifacts) unless MLFLOW_TRACKING_URI is set.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-demo}"
patients="${2:-150}"
medres="${MEDRES:-medres}"

rm -rf "$out" && mkdir -p "$out"
cd "$out"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}"

"$medres" synth chest-xray --out cxr --patients "$patients" --seed 0
"$medres" fit --config "$repo/configs/chest_xray.yaml" --config "$repo/configs/profiles/cpu_demo.yaml" \
    --data.root cxr
# The first version becomes @champion if it beats chance (macro AUROC ≥ 0.5) on the test split.
"$medres" promote --model chest_xray --version latest --data.root cxr
"$medres" score --model models:/chest_xray@champion --input cxr --output preds.parquet

mlflow="$(dirname "$(command -v "$medres")")/mlflow"
echo "Runs:        $mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
echo "Predictions: $PWD/preds.parquet (errors: $PWD/preds.errors.parquet)"
