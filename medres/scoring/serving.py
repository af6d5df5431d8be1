"""The served model: an MLflow pyfunc scoring DICOM paths (or 2D pixel arrays) like ``medres score``.

Columns in and out are :mod:`medres.tracking.pyfunc`'s signature. Errors are ``kind: message`` with the
kinds of ``medres score``'s error ledger (``not_dicom``, ``truncated``, ``not_selected``,
``preprocessing_error``, ...), plus ``bad_input`` for a request row that names no usable input.

A path is scored exactly as ``medres score`` scores that file: the same header read and selection rules
(:func:`medres.data.selection.select`), the same series planning (:func:`medres.scoring.samples.plan_scoring`),
the same preprocessing (:func:`medres.data.transforms.eval_transforms`) and the same float32 network.
A ``pixels`` array enters the 2D pipeline after its read step (resize, intensity scaling, pad/crop); a package
with a DICOM VOI step (``voi`` other than ``none``) needs the file's header, so it refuses arrays, and a 3D
package needs the series' geometry, so it refuses them too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext
from monai.data import MetaTensor
from monai.transforms import Compose

from medres.data.box_transforms import (
    BOX_KEY,
    BOX_LABEL_KEY,
    box_eval_transforms,
    boxes_to_patient_mm,
    boxes_to_stored_pixels,
)
from medres.data.keys import patient_key_salt
from medres.data.manifest import read_manifest_row
from medres.data.selection import select
from medres.data.transforms import IDENTITY_COLUMNS, IMAGE_KEY, LoadDicomd, eval_transforms
from medres.dicom import DicomErrorKind, DicomReadError
from medres.models.detector import BOX, LABEL, SCORES, detect
from medres.models.inference import predict_probabilities
from medres.package import ModelPackage, finding_column, probability_column
from medres.scoring.dataset import PREPROCESSING_ERROR, SERIES_ERROR, failure_rows
from medres.scoring.samples import ScoringSample, plan_scoring
from medres.scoring.writers import BOX_CORNERS, box_rows
from medres.tracking.defaults import disable_telemetry
from medres.tracking.pyfunc import BOXES_COLUMN, ERROR_COLUMN, PACKAGE_ARTIFACT, PATH_COLUMN, PIXELS_COLUMN

BAD_INPUT = "bad_input"  # a request row that names no usable input (the ledger kinds are about files)
BATCH_SIZE = 32  # images (2D) or volumes (3D) per forward pass


@dataclass(frozen=True)
class _Failed:
    """A request row that cannot be scored, and why (``kind: message``)."""

    error: str


def _error(kind: str, message: str) -> _Failed:
    return _Failed(f"{kind}: {message}")


def _present(value: Any) -> bool:
    """Whether a cell holds a value (pandas fills a missing cell with None or NaN)."""
    if value is None:
        return False
    return not (isinstance(value, float) and np.isnan(value))


class MedresPyfuncModel(PythonModel):
    """Applies the packaged selection, preprocessing and network to the DICOM inputs of each request row."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the medres package (safetensors + JSON, validated) from the model's artifacts."""
        disable_telemetry()  # a serving process must not phone home either
        self.package = ModelPackage.load(Path(context.artifacts[PACKAGE_ARTIFACT]))
        self.network = self.package.build_model()
        # A detector's chain keeps the image geometry (its boxes map back to stored pixels with it).
        preprocessing = self.package.preprocessing
        self.transform = (
            box_eval_transforms(preprocessing) if self.package.is_detector else eval_transforms(preprocessing)
        )
        steps = list(self.transform.transforms)
        # Arrays enter the same pipeline after its read step; checked so a reordered preset fails loudly here.
        if self.package.preprocessing.spatial_dims == 2 and not isinstance(steps[0], LoadDicomd):
            raise TypeError(f"2D eval pipeline starts with {type(steps[0]).__name__}, expected LoadDicomd")
        self.array_transform = Compose(steps[1:])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Probabilities, thresholded findings and an error per input row, in input order."""
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(
                f"expected a DataFrame with a {PATH_COLUMN!r} or {PIXELS_COLUMN!r} column, got {type(model_input)}"
            )
        paths = model_input[PATH_COLUMN] if PATH_COLUMN in model_input else [None] * len(model_input)
        pixels = model_input[PIXELS_COLUMN] if PIXELS_COLUMN in model_input else [None] * len(model_input)
        prepared = [self._prepare(path, array) for path, array in zip(paths, pixels, strict=True)]
        probs = np.full((len(prepared), len(self.package.findings)), np.nan)
        ok = [i for i, item in enumerate(prepared) if isinstance(item, torch.Tensor)]
        batches = (
            torch.stack([prepared[i] for i in ok[start : start + BATCH_SIZE]])  # type: ignore[misc]  # (B, C, *spatial)
            for start in range(0, len(ok), BATCH_SIZE)
        )
        errors = [item.error if isinstance(item, _Failed) else None for item in prepared]
        if self.package.is_detector:
            boxes: list[str | None] = [None] * len(prepared)
            for start in range(0, len(ok), BATCH_SIZE):
                rows = ok[start : start + BATCH_SIZE]
                images = [prepared[i] for i in rows]
                outputs = detect(self.network, torch.stack([torch.as_tensor(im) for im in images]))  # type: ignore[arg-type]
                for i, image, output in zip(rows, images, outputs, strict=True):
                    probs[i], boxes[i] = self._boxes(image, output)  # type: ignore[arg-type]
            frame = self._frame(probs, errors)
            frame.insert(len(frame.columns) - 1, BOXES_COLUMN, pd.Series(boxes, dtype="string"))
            return frame
        if ok:
            probs[ok] = predict_probabilities(self.network, batches).double().numpy()
        return self._frame(probs, errors)

    def _boxes(self, image: MetaTensor, output: dict[str, torch.Tensor]) -> tuple[np.ndarray, str]:
        """A detector's row: top box score per finding, and its boxes in stored pixels as JSON (score order)."""
        labels, scores = output[LABEL].cpu().numpy(), output[SCORES].float().cpu().numpy()
        boxes = output[BOX].float().cpu()
        if self.package.preprocessing.spatial_dims == 3:  # series boxes are reported in patient LPS mm
            stored = boxes_to_patient_mm(boxes, image.affine)
        else:
            stored = boxes_to_stored_pixels(boxes, image.affine, image.meta["original_affine"])
        findings, thresholds = self.package.findings, self.package.thresholds
        top = np.array([float(scores[labels == f].max()) if (labels == f).any() else 0.0 for f in range(len(findings))])
        rows = box_rows({}, stored, labels, scores, findings, thresholds, "", "")
        keep = ("finding", "score", "call", *BOX_CORNERS[self.package.preprocessing.spatial_dims])
        return top, json.dumps([{k: row[k] for k in keep} for row in rows])

    # ---- one request row → network input or failure --------------------------------------------------
    def _prepare(self, path: Any, pixels: Any) -> torch.Tensor | _Failed:
        if _present(path) == _present(pixels):
            return _error(BAD_INPUT, f"give exactly one of {PATH_COLUMN!r} and {PIXELS_COLUMN!r} per row")
        if _present(pixels):
            return self._from_pixels(pixels)
        if self.package.preprocessing.spatial_dims == 3:
            return self._series_sample(Path(str(path)))
        return self._instance_sample(Path(str(path)))

    def _instance_sample(self, file: Path) -> torch.Tensor | _Failed:
        """A 2D package's input from one file: header read and selection as ``medres score`` does them."""
        if not file.is_file():
            return _error(DicomErrorKind.UNREADABLE, f"{file}: no such file")
        root = file.parent
        try:
            # The salted patient key is computed (the row has it) but never leaves this method.
            row = read_manifest_row(file, root, patient_key_salt())
        except DicomReadError as err:
            return _error(str(err.kind), err.message)
        _, rejected = select(pd.DataFrame([row]), self.package.selection, 2)
        if len(rejected):
            return _error(str(rejected["kind"].iloc[0]), str(rejected["message"].iloc[0]))
        member = {key: row[key] for key in IDENTITY_COLUMNS}
        return self._load(ScoringSample(str(file), member, (member,)), root, None)

    def _series_sample(self, path: Path) -> torch.Tensor | _Failed:
        """A 3D package's input: plan the folder as ``medres score`` does and take the series ``path`` names."""
        if not path.exists():
            return _error(DicomErrorKind.UNREADABLE, f"{path}: no such file or folder")
        root = path if path.is_dir() else path.parent
        plan = plan_scoring(root, self.package.selection)
        if path.is_file():
            name = path.name
            sample = next((s for s in plan.samples if any(m["path"] == name for m in s.members)), None)
            if sample is None:
                ledger = next((row for row in plan.ledger if row["path"] == name), None)
                if ledger is None:  # the plan accounts for every file; this is a safeguard, not a case
                    return _error(DicomErrorKind.UNREADABLE, f"{path}: not found by the series index")
                return _error(str(ledger["kind"]), str(ledger["message"]))
            return self._load(sample, root, name)
        if len(plan.samples) == 1:
            return self._load(plan.samples[0], root, None)
        if not plan.samples:
            reasons = sorted({f"{row['kind']}: {row['message']}" for row in plan.ledger})
            return _Failed(reasons[0] if len(reasons) == 1 else f"no scorable series in {path}: {'; '.join(reasons)}")
        return _error(
            BAD_INPUT, f"{path} holds {len(plan.samples)} selected series; send one series' folder or one of its files"
        )

    def _load(self, sample: ScoringSample, root: Path, file: str | None) -> torch.Tensor | _Failed:
        """Preprocess a sample; a failure gets the ledger row ``medres score`` would write for ``file``."""
        try:
            image = self.transform(self._inputs(sample.image))[IMAGE_KEY]
        except Exception as err:  # every failure becomes the row's error, as in the scoring ledger
            rows = failure_rows(sample, root, err)
            # The row of the file asked about, else the series' own cause rather than a sibling's "series_error".
            row = next((r for r in rows if r["path"] == file), None) or next(
                (r for r in rows if r["kind"] != SERIES_ERROR), rows[0]
            )
            return _error(str(row["kind"]), str(row["message"]))
        return self._network_input(image)

    def _inputs(self, image: Any) -> dict[str, Any]:
        """The transform's input dict; a detector's chain carries (no) boxes beside the image."""
        if not self.package.is_detector:
            return {IMAGE_KEY: image}
        width = 2 * self.package.preprocessing.spatial_dims
        return {IMAGE_KEY: image, BOX_KEY: np.zeros((0, width), np.float32), BOX_LABEL_KEY: np.zeros(0, np.int64)}

    def _network_input(self, image: Any) -> torch.Tensor:
        """A plain tensor for a classifier; a detector keeps the MetaTensor and so its affines."""
        if self.package.is_detector and isinstance(image, MetaTensor):
            return image
        return image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)

    def _from_pixels(self, pixels: Any) -> torch.Tensor | _Failed:
        """A 2D package's input from an array in modality units: the pipeline from its resize step on."""
        preprocessing = self.package.preprocessing
        if preprocessing.spatial_dims == 3:
            return _error(BAD_INPUT, "a 3D package needs the series' geometry: send its folder as 'path'")
        if preprocessing.voi != "none":
            return _error(BAD_INPUT, f"the package applies DICOM VOI ({preprocessing.voi!r}): send the file's path")
        try:
            array = np.asarray([np.asarray(line, dtype=np.float32) for line in pixels], dtype=np.float32)
        except (TypeError, ValueError) as err:
            return _error(BAD_INPUT, f"pixels: not a (rows, columns) array of numbers: {err}")
        if array.ndim != 2 or min(array.shape) < 1:
            return _error(BAD_INPUT, f"pixels: expected a (rows, columns) array, got shape {array.shape}")
        pixels_in: Any = torch.from_numpy(array)[None]  # (1, rows, cols)
        if self.package.is_detector:
            # The array's own pixel grid stands for the stored image: identity affines, so boxes come back in its
            # (column, row) pixel edges as a file's come back in its stored pixels.
            eye = torch.eye(3, dtype=torch.float64)
            pixels_in = MetaTensor(pixels_in, affine=eye, meta={"original_affine": eye.numpy()})
        try:
            image = self.array_transform(self._inputs(pixels_in))[IMAGE_KEY]
        except Exception as err:  # as _load: the row fails, the request goes on
            return _error(PREPROCESSING_ERROR, f"{type(err).__name__}: {err}".splitlines()[0])
        return self._network_input(image)

    # ---- output ---------------------------------------------------------------------------------------
    def _frame(self, probs: np.ndarray, errors: list[str | None]) -> pd.DataFrame:
        """The output rows; a failed row's calls are null, never a made-up ``False``."""
        failed = np.array([e is not None for e in errors], dtype=bool)
        # In float32, as medres score compares (the network's probabilities are float32).
        calls = probs.astype(np.float32) >= np.asarray(self.package.thresholds, dtype=np.float32)
        out: dict[str, Any] = {}
        for j, finding in enumerate(self.package.findings):
            out[probability_column(finding)] = probs[:, j]
        for j, finding in enumerate(self.package.findings):
            out[finding_column(finding)] = pd.array(
                [None if bad else bool(call) for bad, call in zip(failed, calls[:, j], strict=True)], dtype="boolean"
            )
        out[ERROR_COLUMN] = pd.array(errors, dtype="string")
        return pd.DataFrame(out)
