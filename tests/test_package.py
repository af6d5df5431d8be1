import json

import pytest
import torch

from medres.data.transforms import Preprocessing
from medres.package import ModelPackage, PackageError
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
