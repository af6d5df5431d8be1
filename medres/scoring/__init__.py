"""Batch scoring of DICOM folders with a registered model or a checkpoint: streamed, resumable, distributed."""

from medres.scoring.score import ScoreSummary, score_archive
from medres.scoring.studies import aggregate_studies

__all__ = ["ScoreSummary", "aggregate_studies", "score_archive"]
