"""Batch scoring of DICOM folders with a registered model or a checkpoint."""

from medres.scoring.score import ScoreSummary, score_archive

__all__ = ["ScoreSummary", "score_archive"]
