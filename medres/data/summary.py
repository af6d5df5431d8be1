"""What a fit trained and was judged on, in numbers that are safe to log: split sizes, label counts, a fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FindingCounts:
    """Labels of one finding in one split."""

    positive: int
    negative: int
    unknown: int  # NaN: not labelled, left out of loss and metrics
    uncertain: int  # -1: handled by the model's uncertain policy

    def to_dict(self) -> dict[str, int]:
        """Plain dict for JSON and markdown."""
        return {
            "positive": self.positive,
            "negative": self.negative,
            "unknown": self.unknown,
            "uncertain": self.uncertain,
        }


@dataclass(frozen=True)
class DataSummary:
    """Split sizes (samples and patients), label counts per finding and split, and fingerprints of the samples.

    The fingerprint is a SHA-256 over every sample's archive-relative path, split and labels, in a fixed order:
    two runs with the same fingerprint saw the same data split the same way. ``digests`` holds the same hash per
    split (over that split's paths and labels): two runs with the same training digest trained on the same samples
    and labels whatever their other splits were. Neither reveals anything about patients.
    """

    findings: list[str]
    samples: dict[str, int]
    patients: dict[str, int]
    counts: dict[str, dict[str, FindingCounts]] = field(default_factory=dict)  # split → finding → counts
    fingerprint: str = ""
    digests: dict[str, str] = field(default_factory=dict)  # split → SHA-256 of its paths and labels

    @classmethod
    def from_samples(cls, labeled: pd.DataFrame, findings: list[str]) -> DataSummary:
        """Summarise a labelled sample table with ``path``, ``patient_key``, ``split`` and one column per finding."""
        samples: dict[str, int] = {}
        patients: dict[str, int] = {}
        counts: dict[str, dict[str, FindingCounts]] = {}
        for split in SPLITS:
            rows = labeled[labeled["split"] == split]
            samples[split] = len(rows)
            patients[split] = int(rows["patient_key"].nunique())
            counts[split] = {}
            for finding in findings:
                values = rows[finding].to_numpy(dtype=np.float64)
                counts[split][finding] = FindingCounts(
                    positive=int((values == 1).sum()),
                    negative=int((values == 0).sum()),
                    unknown=int(np.isnan(values).sum()),
                    uncertain=int((values == -1).sum()),
                )
        ordered = labeled.sort_values("path")[["path", "split", *findings]]
        digests = {split: _sha256(ordered[ordered["split"] == split]) for split in SPLITS}
        return cls(
            findings=list(findings),
            samples=samples,
            patients=patients,
            counts=counts,
            fingerprint=_sha256(ordered),
            digests=digests,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for JSON artifacts and the model card)."""
        return {
            "findings": self.findings,
            "samples": self.samples,
            "patients": self.patients,
            "counts": {s: {f: c.to_dict() for f, c in per.items()} for s, per in self.counts.items()},
            "fingerprint": self.fingerprint,
            "digests": self.digests,
        }


def _sha256(table: pd.DataFrame) -> str:
    """SHA-256 of a table's CSV text (NaN written as ``nan``), in the row order given."""
    return hashlib.sha256(table.to_csv(index=False, na_rep="nan").encode()).hexdigest()
