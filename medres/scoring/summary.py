"""What a scoring job did: the counts ``medres score`` prints, returns and logs to its MLflow run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ScoreSummary:
    """What a scoring job did (over all its runs and ranks).

    Attributes:
        predictions: Prediction rows (instances for a 2D model, series for a 3D one).
        scored_files: Input files those rows stand for.
        errors: Ledger rows (one per file).
        error_kinds: Ledger rows per kind.
        output: Predictions dataset folder.
        errors_path: Error-ledger dataset folder.
        seconds: This run's wall time.
        series: Whether a prediction row stands for a series (3D model) rather than one file.
        files: Input files (``scored_files + errors``).
        studies: Rows of the study table.
        studies_path: The study table.
        resumed: Input files committed by earlier runs of the job (not scored again by this one).
        rank: This process's rank (only rank 0 writes the study table and the MLflow run).
        run_id: The MLflow scoring run, when one was logged.
        model_name: Registered model name (or the checkpoint's file name).
        model_version: Registered version (or ``checkpoint``).
    """

    predictions: int
    scored_files: int
    errors: int
    error_kinds: dict[str, int]
    output: Path
    errors_path: Path
    seconds: float
    series: bool = False
    files: int = 0
    studies: int = 0
    studies_path: Path | None = None
    resumed: int = 0
    rank: int = 0
    run_id: str | None = None
    model_name: str = ""
    model_version: str = ""

    @property
    def model(self) -> str:
        """``name/version`` of the model that scored."""
        return f"{self.model_name}/{self.model_version}"

    @property
    def files_per_second(self) -> float:
        """Input files this run settled per second of its wall time."""
        return (self.files - self.resumed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One human line for the terminal."""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.error_kinds.items())) or "none"
        unit = f"series ({self.scored_files} file(s))" if self.series else "file(s)"
        resumed = f" ({self.resumed} resumed)" if self.resumed else ""
        return (
            f"scored {self.predictions} {unit} with {self.model} in {self.seconds:.1f}s{resumed}, "
            f"{self.files_per_second:.1f} files/s → {self.output}; "
            f"{self.errors} in the error ledger ({kinds}) → {self.errors_path}; "
            f"{self.studies} stud(ies) → {self.studies_path}"
        )
