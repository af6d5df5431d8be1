#!/usr/bin/env bash
# Lesion localisation, the whole 2D path on a fresh folder (issue 18):
# synthetic RSNA Pneumonia-layout archive → medres labels import → CPU fit of the box detector (registered) →
# medres score with box rows and one DICOM SR per study (TID 1500, SCOORD rectangles) written to WORKDIR/sr.
# Usage: pipelines/boxes_demo.sh WORKDIR [PATIENTS]. WORKDIR is emptied first; MLflow writes to WORKDIR/mlflow.db.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ]; then
    echo "usage: $0 WORKDIR [PATIENTS]" >&2
    exit 2
fi
out="$1"
patients="${2:-300}"
medres="${MEDRES:-medres}"

rm -rf "$out" && mkdir -p "$out"
cd "$out"
export MLFLOW_TRACKING_URI="sqlite:///$PWD/mlflow.db"

# The release layout: stage_2_train_images/<patientId>.dcm + stage_2_train_labels.csv (x, y, width, height).
"$medres" synth rsna-pneumonia --out rsna --patients "$patients" --image_size 256 --seed 0
"$medres" labels import rsna-pneumonia rsna --out labels
"$medres" fit --config "$repo/configs/cxr_boxes.yaml" --config "$repo/configs/profiles/cpu_boxes.yaml" \
    --data.root rsna --data.boxes labels/boxes.csv --trainer.default_root_dir work
"$medres" score --model models:/cxr_boxes/latest --input rsna --output preds.parquet --sr_dir sr

mlflow="$(dirname "$(command -v "$medres")")/mlflow"
echo "Runs:        $mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
echo "Predictions: $PWD/preds.parquet (boxes: $PWD/preds.boxes.parquet, errors: $PWD/preds.errors.parquet)"
echo "SRs:         $PWD/sr/<StudyInstanceUID>/<SOPInstanceUID>.dcm"
