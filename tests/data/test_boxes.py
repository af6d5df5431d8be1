"""Box labels contract: parsing, errors, reader merging, derived image labels (issue 18, part 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medres.data.boxes import (
    MergeRule,
    image_labels,
    merge_readers,
    read_box_csv,
    write_box_csv,
    write_image_labels,
)
from medres.data.manifest import join_labels


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_2d_boxes_negatives_and_round_trip(tmp_path: Path) -> None:
    csv = _write(
        tmp_path / "boxes.csv",
        "SOPInstanceUID,finding,x_min,y_min,x_max,y_max\n"
        "1.2.3,opacity,10,20,30.5,40\n"
        "1.2.3,opacity,50,20,60,44\n"
        "1.2.4,,,,,\n"
        "1.2.5,nodule,0,0,8,8\n",
    )
    labels = read_box_csv(csv)
    assert labels.key == "SOPInstanceUID" and labels.spatial_dims == 2
    assert labels.keys == ["1.2.3", "1.2.4", "1.2.5"]
    assert labels.findings == ["nodule", "opacity"]
    np.testing.assert_array_equal(labels.boxes("1.2.3"), [[10, 20, 30.5, 40], [50, 20, 60, 44]])
    assert labels.boxes("1.2.4").shape == (0, 4)

    table = image_labels(labels, ["opacity", "nodule"])
    assert table.to_dict("list") == {
        "SOPInstanceUID": ["1.2.3", "1.2.4", "1.2.5"],
        "opacity": [1.0, 0.0, 0.0],
        "nodule": [0.0, 0.0, 1.0],
    }

    again = read_box_csv(write_box_csv(labels, tmp_path / "again.csv"))
    pd.testing.assert_frame_equal(again.frame, labels.frame)
    assert "reader" not in (tmp_path / "again.csv").read_text().splitlines()[0]


def test_3d_series_keyed_boxes_in_mm(tmp_path: Path) -> None:
    csv = _write(
        tmp_path / "b.csv",
        "SeriesInstanceUID,finding,x_min,y_min,z_min,x_max,y_max,z_max\n1.9,nodule,-120.5,-30,-210,-110.5,-20,-200\n",
    )
    labels = read_box_csv(csv)
    assert labels.spatial_dims == 3
    # Patient millimetres may be negative; only the extent must be positive.
    np.testing.assert_array_equal(labels.boxes("1.9", "nodule"), [[-120.5, -30, -210, -110.5, -20, -200]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("finding,x_min,y_min,x_max,y_max\n", "line 1: need exactly one key column"),
        ("path,SOPInstanceUID,finding,x_min,y_min,x_max,y_max\n", "line 1: need exactly one key column"),
        ("path,finding,x_min,y_min,x_max\n", "line 1: missing column(s) ['y_max']"),
        ("path,finding,x_min,y_min,x_max,y_max,score\n", "line 1: unexpected column(s) ['score']"),
        ("path,finding,x_min,y_min,x_max,y_max\na.dcm,opacity,1,2,x3,4\n", "line 2, column 'x_max': 'x3' is not"),
        ("path,finding,x_min,y_min,x_max,y_max\na.dcm,o,1,2,3,4\nb.dcm,o,5,6,5,9\n", "line 3, column 'x_max': 5"),
        ("path,finding,x_min,y_min,x_max,y_max\na.dcm,,1,2,3,4\n", "line 2, column 'finding': blank finding"),
        ("path,finding,x_min,y_min,x_max,y_max\n,o,1,2,3,4\n", "line 2, column 'path': blank key"),
        ("path,finding,x_min,y_min,x_max,y_max\na.dcm,o,-1,2,3,4\n", "line 2, column 'x_min': negative pixel"),
        ("path,finding,x_min,y_min,x_max,y_max\na.dcm,o,1,2,3\n", "line 2: 5 cells, header has 6"),
        ("path,finding,x_min,y_min,x_max,y_max\na.dcm,tumour,1,2,3,4\n", "line 2, column 'finding': unknown"),
    ],
)
def test_malformed_files_get_one_line_naming_file_line_column(tmp_path: Path, text: str, message: str) -> None:
    csv = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError) as err:
        read_box_csv(csv, findings=["o", "opacity"])
    assert str(err.value).startswith(f"{csv}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _three_readers(tmp_path: Path) -> Path:
    # Image a: readers r1 and r2 box the same lesion (IoU 81/119 = 0.68 between their boxes), r3 sees
    # nothing; r3 alone boxes a second lesion far away. Image b: only r1 boxes anything.
    # Image c: read once, by r1, one box.
    return _write(
        tmp_path / "readers.csv",
        "path,finding,x_min,y_min,x_max,y_max,reader\n"
        "a.dcm,opacity,0,0,10,10,r1\n"
        "a.dcm,opacity,1,1,11,11,r2\n"
        "a.dcm,opacity,50,50,60,60,r3\n"
        "b.dcm,opacity,20,20,30,30,r1\n"
        "b.dcm,,,,,,r2\n"
        "b.dcm,,,,,,r3\n"
        "c.dcm,opacity,5,5,9,9,r1\n",
    )


def test_union_fuses_overlapping_readers_into_their_mean_box(tmp_path: Path) -> None:
    merged = merge_readers(read_box_csv(_three_readers(tmp_path)), MergeRule("union", iou=0.5))
    np.testing.assert_allclose(merged.boxes("a.dcm"), [[0.5, 0.5, 10.5, 10.5], [50, 50, 60, 60]])
    np.testing.assert_allclose(merged.boxes("b.dcm"), [[20, 20, 30, 30]])
    np.testing.assert_allclose(merged.boxes("c.dcm"), [[5, 5, 9, 9]])
    assert set(merged.frame["reader"]) == {""}


def test_union_keeps_boxes_apart_below_the_iou(tmp_path: Path) -> None:
    # IoU 0.68 < 0.7: the two readers' boxes stay two boxes.
    merged = merge_readers(read_box_csv(_three_readers(tmp_path)), MergeRule("union", iou=0.7))
    assert len(merged.boxes("a.dcm")) == 3


def test_consensus_of_two_readers(tmp_path: Path) -> None:
    merged = merge_readers(read_box_csv(_three_readers(tmp_path)), MergeRule("consensus", min_readers=2, iou=0.5))
    # a: only the r1+r2 lesion has two readers; b: one reader of three -> negative; c: read once, kept.
    np.testing.assert_allclose(merged.boxes("a.dcm"), [[0.5, 0.5, 10.5, 10.5]])
    assert merged.boxes("b.dcm").shape == (0, 4)
    np.testing.assert_allclose(merged.boxes("c.dcm"), [[5, 5, 9, 9]])
    assert image_labels(merged)["opacity"].tolist() == [1.0, 0.0, 1.0]
    # At IoU 0.7 r1 and r2 no longer agree: image a becomes negative.
    strict = merge_readers(read_box_csv(_three_readers(tmp_path)), MergeRule("consensus", min_readers=2, iou=0.7))
    assert image_labels(strict)["opacity"].tolist() == [0.0, 0.0, 1.0]


def test_merge_rule_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="kind"):
        MergeRule("majority")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_readers"):
        MergeRule("consensus", min_readers=0)
    with pytest.raises(ValueError, match="iou"):
        MergeRule(iou=0.0)


def test_derived_labels_join_the_manifest_and_unlisted_images_are_unknown(tmp_path: Path) -> None:
    merged = merge_readers(read_box_csv(_three_readers(tmp_path)), MergeRule("consensus", min_readers=2, iou=0.5))
    labels_csv = write_image_labels(merged, tmp_path / "labels.csv")
    manifest = pd.DataFrame({"path": ["a.dcm", "b.dcm", "c.dcm", "d.dcm"], "PatientID": ["p1", "p1", "p2", "p3"]})
    joined = join_labels(manifest, labels_csv)
    # d.dcm is in no box file: unknown, so it is dropped like any unlabelled row.
    assert joined["path"].tolist() == ["a.dcm", "b.dcm", "c.dcm"]
    assert joined["opacity"].tolist() == [1.0, 0.0, 1.0]
    assert joined.attrs["unlabelled_dropped"] == 1


def test_sop_instance_keyed_labels_join(tmp_path: Path) -> None:
    csv = _write(tmp_path / "b.csv", "SOPInstanceUID,finding,x_min,y_min,x_max,y_max\n1.1,o,1,1,4,4\n1.2,,,,,\n")
    labels_csv = write_image_labels(read_box_csv(csv), tmp_path / "labels.csv")
    manifest = pd.DataFrame({"path": ["x", "y"], "SOPInstanceUID": ["1.2", "1.1"]})
    assert join_labels(manifest, labels_csv)["o"].tolist() == [0.0, 1.0]


def test_one_readers_overlapping_boxes_stay_apart(tmp_path: Path) -> None:
    csv = _write(tmp_path / "b.csv", "path,finding,x_min,y_min,x_max,y_max\na,o,0,0,10,10\na,o,1,1,11,11\n")
    merged = merge_readers(read_box_csv(csv), MergeRule("union", iou=0.1))
    np.testing.assert_array_equal(merged.boxes("a"), [[0, 0, 10, 10], [1, 1, 11, 11]])
