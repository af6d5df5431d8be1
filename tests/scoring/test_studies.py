import numpy as np
import pandas as pd
import pytest

from medres.scoring.studies import aggregate_studies

FINDINGS = ["nodule", "effusion"]


def _rows(series: bool = False) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "path": ["a/1.dcm", "a/2.dcm", "b/1.dcm", "c/1.dcm"],
            "SOPInstanceUID": ["1.1", "1.2", "2.1", "3.1"],
            "SeriesInstanceUID": ["1", "1", "2", "3"],
            "StudyInstanceUID": ["9.1", "9.1", "9.2", None],
            "prob_nodule": np.array([0.2, 0.8, 0.3, 0.9], dtype="float32"),
            "prob_effusion": np.array([0.5, 0.3, 0.45, 0.1], dtype="float32"),
            "finding_nodule": [False, True, False, True],
            "finding_effusion": [True, False, False, False],
            "model_name": "cxr",
            "model_version": "3",
        }
    )
    if series:
        rows["n_instances"] = [40, 20, 7, 1]
    return rows


def test_max_aggregation_makes_the_call_on_the_aggregated_probability():
    studies = aggregate_studies(_rows(), FINDINGS, [0.5, 0.4], method="max")
    assert list(studies["StudyInstanceUID"]) == ["9.1", "9.2"]  # no study UID: not attributable, left out
    assert list(studies["n_instances"]) == [2, 1]
    assert studies["prob_nodule"].tolist() == pytest.approx([0.8, 0.3])
    assert studies["prob_effusion"].tolist() == pytest.approx([0.5, 0.45])
    assert studies["finding_nodule"].tolist() == [True, False]
    assert studies["finding_effusion"].tolist() == [True, True]
    assert studies["prob_nodule"].dtype == np.float32
    assert set(studies["model_name"]) == {"cxr"} and set(studies["model_version"]) == {"3"}
    expected = ["StudyInstanceUID", "n_instances", "prob_nodule", "prob_effusion", "finding_nodule"]
    assert list(studies.columns) == [*expected, "finding_effusion", "model_name", "model_version"]


def test_mean_aggregation_and_series_rows_sum_their_files():
    studies = aggregate_studies(_rows(series=True), FINDINGS, [0.5, 0.4], method="mean")
    assert studies["prob_nodule"].tolist() == pytest.approx([0.5, 0.3])
    assert studies["prob_effusion"].tolist() == pytest.approx([0.4, 0.45])
    assert studies["finding_nodule"].tolist() == [True, False]  # 0.5 ≥ 0.5
    assert studies["finding_effusion"].tolist() == [True, True]
    assert list(studies["n_instances"]) == [60, 7]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="'median'"):
        aggregate_studies(_rows(), FINDINGS, [0.5, 0.5], method="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 threshold"):
        aggregate_studies(_rows(), FINDINGS, [0.5])
    with pytest.raises(ValueError, match="prob_pneumothorax"):
        aggregate_studies(_rows(), ["pneumothorax"], [0.5])
    mixed = _rows()
    mixed.loc[1, "model_version"] = "4"
    with pytest.raises(ValueError, match="more than one model version"):
        aggregate_studies(mixed, FINDINGS, [0.5, 0.5])


def test_no_rows_gives_an_empty_table_with_the_columns():
    studies = aggregate_studies(_rows().iloc[:0], FINDINGS, [0.5, 0.5])
    assert len(studies) == 0 and "finding_effusion" in studies.columns
