"""``medres report-degradation``: the degradation experiment's report from its MLflow runs."""

from __future__ import annotations

from pathlib import Path


def report_degradation_command(
    experiment: str = "degradation",
    out: Path = Path("docs/degradation"),
    networks: list[str] | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Report the degradation experiment: table, training curves and verdict from its MLflow runs.

    Args:
        experiment: MLflow experiment holding the fits.
        out: Folder for README.md and training_curves.png.
        networks: Two plain and two residual backbones of two depths (default plain20 plain56 resnet20 resnet56).
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from medres.experiments.degradation import DEFAULT_NETWORKS, report_degradation

    report = report_degradation(experiment, out, networks or DEFAULT_NETWORKS, tracking_uri)
    print(f"wrote {report.readme} and {report.plot}; logged to run {report.report_run_id}")
    print("effect holds" if report.verdict.holds else "effect does NOT hold", end=": ")
    print(f"plain gap {report.verdict.plain_gap:+.4f}, residual gap {report.verdict.residual_gap:+.4f}")
