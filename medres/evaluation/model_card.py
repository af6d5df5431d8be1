"""A model card in Markdown: what the model is for, what it was trained on, how well it does, how to use it.

The card follows the sections of Mitchell et al. 2019, "Model Cards for Model Reporting" (arXiv:1810.03993), cut to
what medres knows: intended use and limitations, the model, the data, metrics with 95 % intervals, the operating
thresholds, calibration and how to score. The output depends only on the arguments (no clock, no environment), so the
same run always renders the same card.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from medres.evaluation.metrics import EvaluationReport, FindingMetrics
from medres.evaluation.thresholds import OperatingPoint, ThresholdRule

__all__ = ["format_interval", "format_value", "render_model_card"]

_SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def format_value(value: float, digits: int = 3) -> str:
    """A metric for the card: ``0.912``, or an en dash when undefined."""
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def format_interval(value: float, interval: tuple[float, float], digits: int = 3) -> str:
    """``0.912 (0.871–0.948)``; the bracket is left out when the interval is undefined."""
    low, high = interval
    if math.isnan(low) or math.isnan(high):
        return format_value(value, digits)
    return f"{format_value(value, digits)} ({low:.{digits}f}–{high:.{digits}f})"


def render_model_card(
    report: EvaluationReport,
    operating_points: Sequence[OperatingPoint],
    rule: ThresholdRule,
    *,
    model_name: str | None = None,
    model_version: str | int | None = None,
    backbone: str | None = None,
    parameters: int | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    data_summary: Mapping[str, Any] | None = None,
    evaluated_on: str = "test",
    synthetic_data: bool = False,
    created: str | None = None,
    run_id: str | None = None,
) -> str:
    """Render the model card.

    Args:
        report: Metrics on the evaluation split, with bootstrap intervals (``medres.evaluation.metrics.evaluate``).
        operating_points: The thresholds and the validation operating points they were chosen at, one per finding
            in the report's order (``medres.evaluation.thresholds.choose_thresholds``).
        rule: The rule the thresholds were chosen by.
        model_name: Registered model name; also used in the scoring command.
        model_version: Registered version.
        backbone: Backbone name, e.g. ``"resnet18"``.
        parameters: Number of parameters.
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        preprocessing: The preprocessing settings (name → value), listed as given.
        data_summary: Split sizes and label counts as ``medres.data.summary.DataSummary.to_dict()`` gives them:
            ``samples`` and ``patients`` (split → count), ``counts`` (split → finding → positive / negative /
            unknown / uncertain), ``fingerprint`` and ``digests`` (split → SHA-256); every part optional.
        evaluated_on: Name of the split ``report`` was computed on.
        synthetic_data: Whether the data were synthetic (adds a warning that the numbers say nothing clinical).
        created: A date or timestamp to print; nothing is printed when None (the card stays reproducible).
        run_id: The MLflow run that produced the model.

    Returns:
        The card as Markdown.
    """
    findings = [m.finding for m in report.findings]
    if len(operating_points) != len(findings):
        raise ValueError(f"{len(operating_points)} operating points for {len(findings)} findings in the report")
    sections = [
        _title(model_name, model_version, created, run_id),
        _intended_use(findings, synthetic_data, data_summary),
        _model(backbone, parameters, spatial_dims, in_channels, preprocessing),
        _data(findings, data_summary),
        _metrics(report, evaluated_on),
        _thresholds(findings, operating_points, rule),
        _calibration(report, evaluated_on),
        _usage(model_name),
    ]
    return "\n\n".join(section.strip("\n") for section in sections if section) + "\n"


def _title(name: str | None, version: str | int | None, created: str | None, run_id: str | None) -> str:
    title = f"# Model card: {name or 'medres detection model'}"
    if version is not None:
        title += f" (version {version})"
    lines = [title]
    if created:
        lines.append(f"Created: {created}")
    if run_id:
        lines.append(f"MLflow run: `{run_id}`")
    return "\n\n".join(lines)


def _intended_use(findings: Sequence[str], synthetic: bool, data: Mapping[str, Any] | None) -> str:
    lines = [
        "## Intended use and limitations",
        "",
        f"Detects {', '.join(findings)} in images: one probability per finding, and a call where the probability "
        "reaches the finding's operating threshold.",
        "",
        "- **Research use only. This is not a medical device** and must not be used for diagnosis, triage or any "
        "clinical decision.",
        "- The operating thresholds were chosen on the validation split; prevalence, scanners or protocols that "
        "differ from the training data change sensitivity, specificity and above all PPV.",
        "- Performance outside the archive the model was trained on (other sites, populations, devices) is unknown.",
        "- The 95 % intervals are bootstrap intervals on one evaluation split; small splits give wide intervals, and "
        "a finding with few positives is estimated poorly.",
    ]
    patients = (data or {}).get("patients") or {}
    if patients:
        total = sum(int(patients.get(split, 0)) for split in _SPLITS)
        lines.append(f"- Trained and evaluated on {total} patients in all.")
    if synthetic:
        lines.append(
            "- **Synthetic data**: trained and evaluated on synthetic images (`medres synth`). The numbers below "
            "check the pipeline; they say nothing about performance on real patients."
        )
    return "\n".join(lines)


def _model(
    backbone: str | None,
    parameters: int | None,
    spatial_dims: int | None,
    in_channels: int | None,
    preprocessing: Mapping[str, Any] | None,
) -> str:
    rows = [
        ("Backbone", f"`{backbone}`" if backbone else None),
        ("Parameters", f"{parameters:,}" if parameters is not None else None),
        ("Input", _input(spatial_dims, in_channels)),
    ]
    lines = ["## Model", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value]
    if preprocessing:
        lines += ["", "Preprocessing (runs identically in training and scoring; it travels inside the model):", ""]
        lines += [f"- `{key}`: {_plain(value)}" for key, value in preprocessing.items()]
    return "\n".join(lines)


def _input(spatial_dims: int | None, in_channels: int | None) -> str | None:
    if spatial_dims is None and in_channels is None:
        return None
    kind = {2: "2D images", 3: "3D volumes"}.get(spatial_dims or 0, "images")
    return f"{kind}, {in_channels} channel(s)" if in_channels is not None else kind


def _plain(value: Any) -> str:
    """A setting's value for the card: sequences as ``(a, b)``, floats without float noise."""
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_plain(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _data(findings: Sequence[str], data: Mapping[str, Any] | None) -> str:
    if not data:
        return ""
    lines = ["## Data"]
    samples, patients = data.get("samples") or {}, data.get("patients") or {}
    splits = [s for s in _SPLITS if s in samples or s in patients]
    digests = data.get("digests") or {}
    if splits and digests:
        # The first 16 hex digits are the digest the run page shows for the split's MLflow dataset
        # (medres/tracking/datasets.py), so the card and the run can be matched by eye.
        lines += ["", "| Split | Samples | Patients | Dataset digest |", "|---|---:|---:|---|"]
        lines += [
            f"| {_SPLIT_NAMES[s]} | {samples.get(s, '–')} | {patients.get(s, '–')} | "
            + (f"`{digests[s][:16]}` |" if digests.get(s) else "– |")
            for s in splits
        ]
    elif splits:
        lines += ["", "| Split | Samples | Patients |", "|---|---:|---:|"]
        lines += [f"| {_SPLIT_NAMES[s]} | {samples.get(s, '–')} | {patients.get(s, '–')} |" for s in splits]
    counts = data.get("counts") or {}
    if counts:
        lines += [
            "",
            "Labels per finding (unknown: not labelled, left out of loss and metrics; uncertain: labelled -1, "
            "handled by the model's uncertain-label policy):",
            "",
            "| Finding | Split | Positive | Negative | Unknown | Uncertain |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for finding in findings:
            for split in (s for s in _SPLITS if finding in (counts.get(s) or {})):
                c = counts[split][finding]
                lines.append(
                    f"| {finding} | {_SPLIT_NAMES[split]} | {c.get('positive', 0)} | {c.get('negative', 0)} "
                    f"| {c.get('unknown', 0)} | {c.get('uncertain', 0)} |"
                )
    if data.get("fingerprint"):
        lines += ["", f"Data fingerprint (SHA-256 of sample paths, splits and labels): `{data['fingerprint']}`"]
    return "\n".join(lines)


def _metrics(report: EvaluationReport, split: str) -> str:
    level = f"{round(100 * report.confidence)} %"
    lines = [
        f"## Metrics on the {_SPLIT_NAMES.get(split, split)} split",
        "",
        f"{report.samples} samples. Point estimates with {level} intervals"
        + (" where given." if report.resamples else " (no bootstrap run)."),
        "",
        "| Finding | Positive | Negative | AUROC | Average precision | Sensitivity | Specificity | PPV | NPV |",
        "|---|---:|---:|---|---|---|---|---|---|",
    ]
    for m in report.findings:
        cells = [_cell(m, metric) for metric in ("auroc", "average_precision", "sensitivity", "specificity")]
        cells += [_cell(m, "ppv"), _cell(m, "npv")]
        lines.append(f"| {m.finding} | {m.positives} | {m.negatives} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean AUROC over findings: {format_value(report.macro_auroc)}."]
    if report.resamples:
        unit = f"{report.clusters} patients" if report.grouped else f"{report.clusters} samples"
        lines += [
            "",
            f"Intervals: {level} percentile bootstrap, {report.resamples} resamples of {unit} "
            f"(seed {report.seed}); sensitivity, specificity, PPV and NPV at the operating thresholds below.",
        ]
        skipped = [f"{m.finding} {m.bootstrap_skipped}" for m in report.findings if m.bootstrap_skipped]
        if skipped:
            lines.append(f"Resamples left out for drawing a single class: {', '.join(skipped)}.")
    return "\n".join(lines)


def _cell(m: FindingMetrics, metric: str) -> str:
    return format_interval(getattr(m, metric), getattr(m, f"{metric}_ci"))


def _thresholds(findings: Sequence[str], points: Sequence[OperatingPoint], rule: ThresholdRule) -> str:
    lines = [
        "## Operating thresholds",
        "",
        f"A finding is called present when its probability is at or above its threshold. Rule: {rule.describe()}, "
        "applied to the validation split.",
        "",
        "| Finding | Threshold | Validation sensitivity | Validation specificity | Positive | Negative | Note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for finding, p in zip(findings, points, strict=True):
        lines.append(
            f"| {finding} | {p.threshold:.4f} | {format_value(p.sensitivity)} | {format_value(p.specificity)} "
            f"| {p.positives} | {p.negatives} | {p.note} |"
        )
    return "\n".join(lines)


def _calibration(report: EvaluationReport, split: str) -> str:
    bins = len(report.calibration[0].edges) - 1 if report.calibration else None
    how = f"{bins} equal-width bins" if bins else "equal-width bins"
    lines = [
        "## Calibration",
        "",
        f"Expected calibration error on the {_SPLIT_NAMES.get(split, split)} split ({how}; 0 is perfectly "
        "calibrated): the sample-weighted mean gap between predicted probability and observed share of positives.",
        "",
        "| Finding | ECE |",
        "|---|---:|",
    ]
    lines += [f"| {m.finding} | {format_value(m.ece)} |" for m in report.findings]
    return "\n".join(lines)


def _usage(name: str | None) -> str:
    model = f"models:/{name or 'NAME'}@champion"
    return "\n".join(
        [
            "## How to score with it",
            "",
            "```bash",
            f"medres score --model {model} --input DIR --output predictions.parquet",
            "```",
            "",
            "Every DICOM file under `DIR` ends up either in `predictions.parquet` (one probability and one call per "
            "finding) or in the error ledger beside it. The preprocessing and thresholds above come with the model.",
        ]
    )
