"""The review of a lesion detector's test epoch: FROC curves, a box montage and the model card (issue 18).

A reviewer in the MLflow UI sees, per finding, the FROC curve with the seven LUNA16 rates marked, mAP at IoU 0.1
and 0.5, CPM and the sensitivities with their patient-clustered 95 % CIs, the box threshold the package calls at
and the false-positive rate it was chosen at, and a montage of test images with true (green) and predicted
(orange, score ≥ threshold) boxes, captioned by the image's place in the split only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from medres.evaluation.detection_metrics import FP_RATES, DetectionCI, HitRule, ImageBoxes, froc
from medres.evaluation.plots import safe_name


def plot_froc(images: Sequence[ImageBoxes], finding: str, rule: HitRule, out_path: Path) -> Path:
    """The FROC curve of one finding (sensitivity against false positives per image, log axis) as a PNG."""
    result = froc(images, rule)
    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    fps = np.maximum(result.curve_fps, FP_RATES[0] / 2)  # the log axis has no 0: the first points sit at its left
    ax.step(fps, result.curve_sensitivity, where="post", color="tab:blue", label=f"CPM {result.cpm:.3f}")
    ax.plot(result.fp_rates, result.sensitivities, "o", color="tab:red", label="LUNA16 rates")
    ax.set_xscale("log", base=2)
    ax.set_xlim(FP_RATES[0] / 2, FP_RATES[-1] * 1.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"FROC: {finding} ({result.lesions} lesions, {result.images} images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path


def plot_box_montage(
    pixels: np.ndarray,
    truth: Sequence[Sequence[tuple[int, np.ndarray]]],
    predicted: Sequence[Sequence[tuple[int, float, np.ndarray]]],
    findings: Sequence[str],
    thresholds: Sequence[float],
    captions: Sequence[str],
    out_path: Path,
) -> Path:
    """A grid of images with true (green) and called predicted (orange) boxes.

    Args:
        pixels: ``(N, H, W)`` network inputs.
        truth: Per image, ``(finding index, (row_min, col_min, row_max, col_max))`` true boxes.
        predicted: Per image, ``(finding index, score, box)`` predictions; those below their finding's threshold are
            left out.
        findings: Finding names.
        thresholds: Box threshold per finding.
        captions: One caption per image (its place in the split: nothing identifying).
        out_path: PNG to write.
    """
    count = len(pixels)
    columns = min(4, max(count, 1))
    rows = max(1, -(-count // columns))
    fig = Figure(figsize=(3 * columns, 3.2 * rows))
    FigureCanvasAgg(fig)
    for i in range(count):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(pixels[i], cmap="gray")
        for f, box in truth[i]:
            ax.add_patch(_rectangle(box, "lime"))
            ax.text(box[1], box[0] - 1, findings[f], color="lime", fontsize=6)
        for f, score, box in predicted[i]:
            if score >= thresholds[f]:
                ax.add_patch(_rectangle(box, "orange"))
                ax.text(box[1], box[2] + 6, f"{findings[f]} {score:.2f}", color="orange", fontsize=6)
        ax.set_title(captions[i], fontsize=8)
        ax.axis("off")
    fig.suptitle("green: truth · orange: predicted, score ≥ the finding's box threshold", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return out_path


def _rectangle(box: np.ndarray, colour: str) -> Rectangle:
    # Network boxes are (row, column) pixel edges; matplotlib's image axes put pixel centres at integers.
    row_min, col_min, row_max, col_max = (float(v) for v in box)
    return Rectangle(
        (col_min - 0.5, row_min - 0.5), col_max - col_min, row_max - row_min, fill=False, edgecolor=colour, lw=1.2
    )


def render_detection_card(
    findings: Sequence[str],
    metrics: Mapping[str, float],
    intervals: Mapping[str, DetectionCI],
    thresholds: Sequence[float],
    threshold_fp_rate: float,
    hit_rule: HitRule,
    model_name: str | None,
    model_version: str | None,
    backbone: str,
    parameters: int,
    preprocessing: Mapping[str, Any],
    data_summary: Mapping[str, Any] | None,
    run_id: str | None,
) -> str:
    """The detector's model card (Markdown): test metrics per finding with CIs, thresholds, data, intended use."""
    title = f"{model_name} version {model_version}" if model_name else "lesion detector"
    hit = f"IoU ≥ {hit_rule.iou:g}" if hit_rule.kind == "iou" else "centre within the lesion's radius (LUNA16)"
    lines = [
        f"# Model card: {title}",
        "",
        "Lesion localisation: boxes with scores per finding (MONAI RetinaNet, ATSS matcher, hard-negative sampling, "
        f"over a medres `{backbone}` feature pyramid; {parameters:,} parameters). The image-level probability of a "
        "finding is its top box score.",
        "",
        f"Test split, per finding. FROC hit rule: {hit}. Brackets: 95 % patient-clustered bootstrap intervals.",
        "",
        "| finding | CPM | sens @ 1 FP/image | mAP@0.1 | mAP@0.5 | AUROC (top box) | box threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for f, finding in enumerate(findings):
        ci = intervals.get(finding)

        def cell(name: str, key: str, ci: DetectionCI | None = ci, finding: str = finding) -> str:
            value = metrics.get(f"test/{name}/{finding}")
            if value is None:
                return "–"
            if ci is not None and key in ci.low:
                return f"{value:.3f} [{ci.low[key]:.3f}, {ci.high[key]:.3f}]"
            return f"{value:.3f}"

        lines.append(
            f"| {finding} | {cell('cpm', 'cpm')} | {cell('sens_at_1fp', 'sens_at_1fp')} | {cell('map_0.1', 'map_0.1')} "
            f"| {cell('map_0.5', 'map_0.5')} | {cell('auroc', '-')} | {thresholds[f]:.3f} |"
        )
    lines += [
        "",
        f"Box thresholds were chosen on the validation split at {threshold_fp_rate:g} false positive(s) per image; "
        "`medres score` calls a box, and its image, present at score ≥ threshold.",
        "",
        "## Input",
        "",
        f"Preprocessing: `{dict(preprocessing)}`. Boxes are reported in stored-pixel edges of the image (2D) or "
        "patient LPS millimetres (3D).",
    ]
    if data_summary:
        lines += [
            "",
            f"Images per split: {data_summary.get('samples')}; patients per split: {data_summary.get('patients')}.",
        ]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "A research model: findings and boxes are for review by a radiologist, not a diagnosis. The metrics hold for "
        "data like the test split only; check them on the site's own archive before use.",
    ]
    if run_id:
        lines += ["", f"MLflow run: `{run_id}`."]
    return "\n".join(lines) + "\n"


def froc_file_name(finding: str) -> str:
    """The artifact name of a finding's FROC curve."""
    return f"froc_{safe_name(finding)}.png"
