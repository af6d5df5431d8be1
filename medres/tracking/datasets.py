"""A fit's train/val/test splits as MLflow datasets: what the run page's "Datasets" section shows.

MLflow records a run's data as dataset inputs (name, digest, source, schema, profile) with a context tag, and its
UI lists them on the run overview and in the runs table, where a reviewer compares runs by them. medres logs one
dataset per split with only numbers that are safe on a shared server:

- digest: the first 16 hex digits of the split's SHA-256 over its archive-relative paths and labels
  (:class:`medres.data.summary.DataSummary`), so equal digests mean the same samples with the same labels;
- source: the archive as the SHA-256 of its absolute path (the same 16 digits a scoring run logs as
  ``input_root_sha256``), never the path, which can name a site or a patient;
- schema: the label columns (1 positive, 0 negative, NaN unknown, -1 uncertain);
- profile: the split's sample and patient counts and its label counts per finding (``labels.<finding>``).

No path, patient key or header value is logged. The full hashes and counts are in the run's ``data_summary.json``.

Why a :class:`~mlflow.data.dataset.Dataset` subclass rather than ``mlflow.data.from_pandas``: the pandas dataset
would need the sample table itself, whose paths are not safe to log, and its profile holds only row and element
counts; MLflow's own ``MetaDataset`` has no profile at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.types import ColSpec, DataType, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from medres.data.summary import SPLITS, DataSummary

# MLflow's context names: its UI shows them as the dataset's tag, and its search filters on them
# (``dataset.context = 'training'``).
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
DIGEST_LENGTH = 16  # MLflow stores digests in a 36-character column and shows them next to the name
SOURCE_TYPE = "medres_archive"


def archive_path_hash(root: Path) -> str:
    """SHA-256 (16 hex digits) of an archive folder's absolute path: names the archive without its path."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:DIGEST_LENGTH]


class ArchiveSource(DatasetSource):
    """A DICOM archive, known to the tracking server only by the hash of its path.

    Args:
        path_sha256: :func:`archive_path_hash` of the archive folder.
    """

    def __init__(self, path_sha256: str) -> None:
        self.path_sha256 = path_sha256

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self) -> Any:
        """Not loadable: the server holds a hash of the archive's path by design, and a hash cannot be opened."""
        raise ValueError(
            f"archive {self.path_sha256}: the tracking server records an archive only by the hash of its path; "
            "pass the archive folder itself (--data.root)"
        )

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # never chosen by MLflow's source resolution: medres builds these itself

    @classmethod
    def _resolve(cls, raw_source: Any) -> ArchiveSource:
        raise ValueError(f"{SOURCE_TYPE} sources are built from a path hash, not resolved from {raw_source!r}")

    def to_dict(self) -> dict[str, Any]:
        """``{"archive_path_sha256": ...}``: the JSON MLflow stores as the dataset's source."""
        return {"archive_path_sha256": self.path_sha256}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> ArchiveSource:
        """The source of a logged dataset's ``source`` JSON."""
        return cls(str(source_dict["archive_path_sha256"]))


class SplitDataset(Dataset):
    """One split of a fit's data as an MLflow dataset: digest, archive source, label schema and counts.

    Args:
        summary: The fit's data summary.
        split: ``train``, ``val`` or ``test``.
        source: The archive the samples come from.
    """

    def __init__(self, summary: DataSummary, split: str, source: ArchiveSource) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: must be one of {', '.join(SPLITS)}")
        if not summary.digests.get(split):
            raise ValueError(f"the data summary has no digest of the {split} split")
        self.summary = summary
        self.split = split
        super().__init__(source=source, name=split, digest=summary.digests[split][:DIGEST_LENGTH])

    def _compute_digest(self) -> str:
        return self.summary.digests[self.split][:DIGEST_LENGTH]

    @property
    def context(self) -> str:
        """MLflow's name for the split's role: ``training``, ``validation`` or ``testing``."""
        return SPLIT_CONTEXTS[self.split]

    @property
    def profile(self) -> dict[str, Any]:
        """``samples``, ``patients`` and per finding ``labels.<finding>``: its positive/negative/unknown/uncertain.

        One key per finding, not one nested ``labels`` object: the UI prints each key on a line and cuts a long
        value short, which hid all but the first finding.
        """
        profile: dict[str, Any] = {
            "samples": self.summary.samples[self.split],
            "patients": self.summary.patients[self.split],
        }
        for finding, counts in self.summary.counts[self.split].items():
            profile[f"labels.{finding}"] = counts.to_dict()
        return profile

    @property
    def schema(self) -> Schema:
        """One float label column per finding, in the model's output order."""
        return Schema([ColSpec(DataType.double, finding) for finding in self.summary.findings])

    def to_dict(self) -> dict[str, str]:
        """Name, digest, source and source type, plus schema and profile as JSON, as MLflow stores them."""
        config = super().to_dict()
        # The envelope MLflow's own datasets use, so the UI renders the schema as a table of columns.
        config["schema"] = json.dumps({"mlflow_colspec": self.schema.to_dict()})
        config["profile"] = json.dumps(self.profile)
        return config

    def to_input(self) -> DatasetInput:
        """The dataset with its context tag, ready for :meth:`MlflowClient.log_inputs`."""
        return DatasetInput(dataset=self._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, self.context)])


def split_datasets(summary: DataSummary, archive: Path) -> list[SplitDataset]:
    """The train, val and test datasets of a fit (a split without samples is left out)."""
    source = ArchiveSource(archive_path_hash(archive))
    return [SplitDataset(summary, split, source) for split in SPLITS if summary.samples.get(split)]


def log_split_datasets(client: MlflowClient, run_id: str, summary: DataSummary, archive: Path) -> list[SplitDataset]:
    """Log the splits as the run's dataset inputs (what ``mlflow.log_input`` does for the active run).

    The client call, not ``mlflow.log_input``: a fit's run belongs to Lightning's logger and is never the
    process's active run. MLflow keeps one record per (experiment, name, digest), so a resumed fit adds nothing.
    """
    datasets = split_datasets(summary, archive)
    client.log_inputs(run_id, datasets=[dataset.to_input() for dataset in datasets])
    return datasets
