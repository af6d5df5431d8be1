"""Batch scoring of DICOM folders with a registered model or a checkpoint: streamed, resumable, distributed."""

from medres.scoring.score import score_archive
from medres.scoring.studies import aggregate_studies
from medres.scoring.summary import ScoreSummary

__all__ = ["ScoreSummary", "aggregate_studies", "score_archive"]
