import json
from dataclasses import replace

import pytest
import torch

from medres.data.selection import SeriesSelection
from medres.data.transforms import Preprocessing
from medres.package import FORMAT_VERSION, ModelPackage, PackageError
from medres.tasks.detection import MultiLabelDetection


def saved_package(tmp_path):
    module = MultiLabelDetection(["x", "y"], Preprocessing(spatial_size=(32, 32)), backbone="resnet18")
    return module.to_package().save(tmp_path / "pkg")


def edit_contract(directory, **changes):
    contract = json.loads((directory / "package.json").read_text())
    contract.update(changes)
    (directory / "package.json").write_text(json.dumps(contract))


def test_refuses_newer_format(tmp_path):
    directory = saved_package(tmp_path)
    edit_contract(directory, format_version=99)
    with pytest.raises(PackageError, match="newer than this medres supports"):
        ModelPackage.load(directory)


def test_refuses_unknown_backbone_and_preprocessing(tmp_path):
    directory = saved_package(tmp_path)
    edit_contract(directory, backbone="vit_giant")
    with pytest.raises(PackageError, match="vit_giant"):
        ModelPackage.load(directory)
    directory = saved_package(tmp_path / "again")
    contract = json.loads((directory / "package.json").read_text())
    edit_contract(directory, preprocessing={**contract["preprocessing"], "window_center": 40})
    with pytest.raises(PackageError, match="window_center"):
        ModelPackage.load(directory)


def test_refuses_weights_that_do_not_fit(tmp_path):
    directory = saved_package(tmp_path)
    package = ModelPackage.load(directory)
    package.state_dict = {k: v for k, v in package.state_dict.items() if not k.startswith("fc.")}
    with pytest.raises(PackageError, match="missing"):
        package.build_model()


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="not a medres model package"):
        ModelPackage.load(tmp_path)


def test_checkpoint_without_medres_entry_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(PackageError, match="not a medres checkpoint"):
        ModelPackage.from_checkpoint(path)


def test_class_path_backbone_round_trips_through_the_package(tmp_path):
    backbone = {"class_path": "monai.networks.nets.DenseNet121", "init_args": {"dropout_prob": 0.0}}
    module = MultiLabelDetection(["x", "y"], Preprocessing(spatial_size=(32, 32)), backbone=backbone).eval()
    directory = module.to_package().save(tmp_path / "pkg")
    assert json.loads((directory / "package.json").read_text())["backbone"] == backbone
    rebuilt = ModelPackage.load(directory).build_model()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), module(images))


def test_package_refuses_a_class_path_that_is_not_a_module_class(tmp_path):
    directory = saved_package(tmp_path)
    edit_contract(directory, backbone={"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}})
    with pytest.raises(PackageError, match="not a torch.nn.Module class"):
        ModelPackage.load(directory)


def test_3d_preprocessing_and_selection_round_trip(tmp_path):
    preprocessing = Preprocessing(
        spatial_dims=3, spatial_size=(16, 16, 8), intensity_window=(-1000.0, 400.0), target_spacing=(2.0, 2.0, 3.0)
    )
    selection = SeriesSelection(
        modalities=("CT",), body_parts=("CHEST",), orientation="axial", min_slices=8, prefer="thinnest"
    )
    module = MultiLabelDetection(["x", "y"], preprocessing, backbone="resnet20").eval()
    package = replace(module.to_package(), selection=selection)
    directory = package.save(tmp_path / "pkg")
    contract = json.loads((directory / "package.json").read_text())
    # A classification package stays format 2 (format 3 adds only the detector keys), so medres 0.2 still loads it.
    assert contract["format_version"] == 2 and FORMAT_VERSION == 3
    assert contract["selection"]["modalities"] == ["CT"] and contract["preprocessing"]["target_spacing"] == [2, 2, 3]
    loaded = ModelPackage.load(directory)
    assert loaded.preprocessing == preprocessing and loaded.selection == selection
    volume = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.build_model()(volume), module(volume))


def test_format_1_package_loads_with_no_selection(tmp_path):
    directory = saved_package(tmp_path)
    contract = json.loads((directory / "package.json").read_text())
    del contract["selection"]
    contract["format_version"] = 1
    (directory / "package.json").write_text(json.dumps(contract))
    assert ModelPackage.load(directory).selection == SeriesSelection()


def test_refuses_unknown_keys_naming_the_package(tmp_path):
    directory = saved_package(tmp_path)
    edit_contract(directory, selection={"modalities": ["CT"], "slice_thickness_max": 3})
    with pytest.raises(PackageError, match=rf"{directory}: .*slice_thickness_max"):
        ModelPackage.load(directory)
    directory = saved_package(tmp_path / "again")
    edit_contract(directory, calibration={"temperature": 1.5})
    with pytest.raises(PackageError, match=rf"{directory}: unknown model package key\(s\) \['calibration'\]"):
        ModelPackage.load(directory)


def test_refuses_contradictions(tmp_path):
    directory = saved_package(tmp_path)
    edit_contract(directory, spatial_dims=3)
    with pytest.raises(PackageError, match="spatial_dims=3 disagrees with preprocessing.spatial_dims=2"):
        ModelPackage.load(directory)
    directory = saved_package(tmp_path / "again")
    edit_contract(directory, selection={"min_slices": 20})
    with pytest.raises(PackageError, match=r"\['min_slices'\] apply to 3D series only"):
        ModelPackage.load(directory)
