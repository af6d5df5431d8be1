"""Streaming Parquet writers for prediction rows and the error ledger."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from medres.data.samples import N_INSTANCES
from medres.data.transforms import IDENTITY_COLUMNS
from medres.package import finding_column, probability_column

LEDGER_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("SOPInstanceUID", pa.string()),
        ("SeriesInstanceUID", pa.string()),
        ("StudyInstanceUID", pa.string()),
        ("kind", pa.string()),
        ("message", pa.string()),
    ]
)


def prediction_schema(findings: Sequence[str], series: bool = False) -> pa.Schema:
    """Prediction rows: UIDs, path, one probability and one call per finding, model name and version.

    An instance row (2D model) names one file: ``path`` and its three UIDs. A series row (3D model,
    ``series=True``) names one series: ``path`` is its first file in slice order (relative to the input
    folder: unique, unlike a folder, which may hold several series), ``SOPInstanceUID`` is null,
    ``SeriesInstanceUID``/``StudyInstanceUID`` are the series', and ``n_instances`` counts the input files
    scored as that series. No patient-identifying column exists here by construction.
    """
    fields = [(name, pa.string()) for name in IDENTITY_COLUMNS]
    fields += [(N_INSTANCES, pa.int32())] if series else []
    fields += [(probability_column(f), pa.float32()) for f in findings]
    fields += [(finding_column(f), pa.bool_()) for f in findings]
    fields += [("model_name", pa.string()), ("model_version", pa.string())]
    return pa.schema(fields)


def prediction_rows(
    identities: Sequence[dict[str, Any]],
    probabilities: torch.Tensor,
    findings: Sequence[str],
    thresholds: Sequence[float],
    model_name: str,
    model_version: str,
) -> list[dict[str, Any]]:
    """Prediction rows (see :func:`prediction_schema`) for one batch.

    Args:
        identities: Per image: ``path`` and the three UIDs (and ``n_instances`` for a series).
        probabilities: (N, F) probabilities, in ``findings`` order.
        findings: Label names.
        thresholds: Operating threshold per finding.
        model_name: Registered name (or checkpoint file name).
        model_version: Registry version (or ``checkpoint``).
    """
    calls = probabilities >= torch.tensor(list(thresholds), dtype=probabilities.dtype)
    rows = []
    for i, identity in enumerate(identities):
        row = {key: identity.get(key) for key in IDENTITY_COLUMNS}
        if N_INSTANCES in identity:
            row[N_INSTANCES] = identity[N_INSTANCES]
        for j, finding in enumerate(findings):
            row[probability_column(finding)] = float(probabilities[i, j])
            row[finding_column(finding)] = bool(calls[i, j])
        row["model_name"], row["model_version"] = model_name, model_version
        rows.append(row)
    return rows


BOX_CORNERS = {2: ("x_min", "y_min", "x_max", "y_max"), 3: ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")}


def box_schema(spatial_dims: int) -> pa.Schema:
    """Box rows of a detection model: one per predicted box (see docs/design.md, "Box rows").

    2D corners are stored-pixel edges of the image (column, row; the box CSV's convention), 3D corners patient LPS
    millimetres. ``box`` numbers the boxes of one image or series by descending score; ``call`` is
    ``score ≥`` the finding's box threshold.
    """
    fields = [(name, pa.string()) for name in IDENTITY_COLUMNS]
    fields += [("finding", pa.string()), ("box", pa.int32()), ("score", pa.float32()), ("call", pa.bool_())]
    fields += [(corner, pa.float32()) for corner in BOX_CORNERS[spatial_dims]]
    fields += [("model_name", pa.string()), ("model_version", pa.string())]
    return pa.schema(fields)


def box_rows(
    identity: dict[str, Any],
    boxes: Any,
    labels: Any,
    scores: Any,
    findings: Sequence[str],
    thresholds: Sequence[float],
    model_name: str,
    model_version: str,
) -> list[dict[str, Any]]:
    """Box rows (see :func:`box_schema`) of one image or series.

    Args:
        identity: The image's ``path`` and UIDs.
        boxes: ``(K, 4)`` or ``(K, 6)`` corners in the output convention (stored pixels or LPS mm).
        labels: ``(K,)`` finding indices.
        scores: ``(K,)`` scores.
        findings: Finding names.
        thresholds: Box threshold per finding.
        model_name: Registered name (or checkpoint file name).
        model_version: Registry version (or ``checkpoint``).
    """
    corners = BOX_CORNERS[len(boxes[0]) // 2] if len(boxes) else ()
    order = sorted(range(len(scores)), key=lambda k: -float(scores[k]))
    rows = []
    for rank, k in enumerate(order):
        finding = int(labels[k])
        row = {key: identity.get(key) for key in IDENTITY_COLUMNS}
        row.update(
            finding=findings[finding],
            box=rank,
            score=float(scores[k]),
            call=bool(float(scores[k]) >= thresholds[finding]),
            model_name=model_name,
            model_version=model_version,
        )
        row.update({corner: float(value) for corner, value in zip(corners, boxes[k], strict=True)})
        rows.append(row)
    return rows


class ParquetStream:
    """Appends row groups to ``path`` as they come; the file appears complete or not at all.

    Rows go to ``path + ".partial"``, renamed over ``path`` by :meth:`close`, so a killed run never
    leaves a truncated file that looks finished.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._partial, schema)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows (dicts keyed by the schema's names)."""
        if rows:
            self._writer.write_table(pa.Table.from_pylist(list(rows), schema=self.schema))
            self.rows += len(rows)

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._writer.close()
        os.replace(self._partial, self.path)

    def __enter__(self) -> ParquetStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.close()
