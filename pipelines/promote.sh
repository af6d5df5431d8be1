#!/usr/bin/env bash
# Registered candidate → test (held-out AUROC) → compare (against @champion, nothing recorded) → gated promotion.
# Usage: pipelines/promote.sh MODEL CANDIDATE_VERSION ARCHIVE [promote options, e.g. --gates.min_macro_auroc 0.7]
# The held-out data is ARCHIVE's test split as the candidate's training wrote it (run from the folder `medres fit`
# ran in, or pass --data.work_dir); --data.split all evaluates every sample of an external archive instead.
# Exit status: 0 promoted, 3 refused by a gate (recorded on the version and in the champion history), else an error.
# Safe to rerun: a refusal is recorded again, a promoted candidate is already @champion and stops with an error.
# MLflow is MLFLOW_TRACKING_URI if set, else ./mlflow.db (the default of every medres command).
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 MODEL CANDIDATE_VERSION ARCHIVE [promote options]" >&2
    exit 2
fi
model="$1"
version="$2"
archive="$3"
shift 3
medres="${MEDRES:-medres}"
args=("$@")
data_options=()  # the --data.* options (and their values) go to every step, so all three judge the same samples
for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ "${args[i]}" == --data.* ]]; then
        data_options+=("${args[i]}")
        if [[ "${args[i]}" != *=* && $((i + 1)) -lt ${#args[@]} ]]; then
            i=$((i + 1))
            data_options+=("${args[i]}")
        fi
    fi
done

echo "== test: models:/$model/$version on held-out data"
"$medres" evaluate --model "models:/$model/$version" --data.root "$archive" "${data_options[@]}"

echo "== compare: against @champion (dry run)"
status=0
"$medres" promote --model "$model" --version "$version" --data.root "$archive" --dry_run true "$@" || status=$?
if [[ $status -ne 0 && $status -ne 3 ]]; then exit "$status"; fi

echo "== promote"
"$medres" promote --model "$model" --version "$version" --data.root "$archive" "$@"
