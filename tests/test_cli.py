import subprocess
import sys

import pydicom
import pytest
import torch
import yaml

from medres.cli import MedresCLI, main
from medres.data.datamodule import DicomDataModule
from medres.models import create_model
from medres.tasks.detection import MultiLabelDetection

from .conftest import dicom_files


def run_medres(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medres.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_print_config_shows_the_merged_resolved_config():
    result = run_medres(
        "fit",
        "--config",
        "configs/chest_xray.yaml",
        "--config",
        "configs/profiles/cpu_demo.yaml",
        "--data.root",
        "/tmp/somewhere",
        "--print_config",
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["backbone"] == "resnet18"  # the profile overrides the experiment
    assert config["trainer"]["precision"] == "32-true"
    assert config["data"]["preprocessing"]["spatial_size"] == [128, 128]
    assert config["data"]["findings"] == ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
    # linked from the data: declared once
    assert config["model"].get("findings") in (None, config["data"]["findings"])
    assert config["register"]["model_name"] == "chest_xray"
    assert config["trainer"]["logger"]["init_args"]["experiment_name"] == "chest_xray"


def test_print_config_without_root_works_for_the_gpu_config():
    result = run_medres("fit", "--config", "configs/chest_xray.yaml", "--print_config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["backbone"] == "resnet50"
    assert config["trainer"]["precision"] == "bf16-mixed"
    assert min(config["data"]["preprocessing"]["spatial_size"]) >= 224


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--data.batch_sise", "4"], "batch_sise"),
        (["--model.backbone_argz", "{}"], "backbone_argz"),
    ],
)
def test_misspelt_key_is_one_line_naming_it(args, named):
    result = run_medres("fit", "--config", "configs/chest_xray.yaml", "--data.root", "/tmp/x", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert named in lines[0]


def test_misspelt_key_in_a_config_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  batch_sizee: 4\n")
    result = run_medres("fit", "--config", "configs/chest_xray.yaml", "--config", str(bad), "--data.root", "/tmp/x")
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "batch_sizee" in lines[0]


def test_unknown_registered_backbone_is_one_error_line(tmp_path):
    result = run_medres(
        "fit", "--config", "configs/chest_xray.yaml", "--data.root", str(tmp_path), "--model.backbone", "resnet5O"
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert "resnet5O" in errors[0] and "resnet50" in errors[0]  # names it and suggests the close match


def test_help_lists_the_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "synth chest-xray", "score", "index"):
        assert command in out


def test_synth_command_writes_an_archive(tmp_path, capsys):
    main(["synth", "chest-xray", "--out", str(tmp_path / "a"), "--patients", "2", "--seed", "3", "--image_size", "64"])
    files = dicom_files(tmp_path / "a")
    assert files and (tmp_path / "a" / "labels.csv").is_file()
    assert f"wrote {len(files)} instance(s)" in capsys.readouterr().out
    assert pydicom.dcmread(files[0]).Modality in ("CR", "DX")


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "trian" in capsys.readouterr().err


def test_score_with_missing_checkpoint_is_one_line(tmp_path):
    result = run_medres("score", "--model", str(tmp_path / "nope.ckpt"), "--input", str(tmp_path), "--output", "x")
    assert result.returncode == 2
    assert "nope.ckpt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def build_cli(monkeypatch, *args: str) -> MedresCLI:
    monkeypatch.setattr(sys, "argv", ["medres"])  # the arguments come from ``args`` only
    return MedresCLI(
        MultiLabelDetection,
        DicomDataModule,
        run=False,
        args=[
            "--config",
            "configs/chest_xray.yaml",
            "--trainer.logger",
            "false",
            "--trainer.accelerator",
            "cpu",
            *args,
        ],
    )


@pytest.mark.parametrize(
    ("config", "backbone_type"),
    [
        ("configs/backbones/resnet50_d.yaml", "ResNet"),
        ("configs/backbones/monai_densenet121.yaml", "DenseNet121"),
    ],
)
def test_backbone_configs_build_their_backbone(monkeypatch, tmp_path, config, backbone_type):
    cli = build_cli(monkeypatch, "--config", config, "--data.root", str(tmp_path))
    backbone = cli.model.backbone
    assert type(backbone).__name__ == backbone_type
    if backbone_type == "ResNet":  # the registered name with its overrides
        assert backbone.avg_down and backbone.grad_checkpointing
        assert backbone.blocks()[-1].drop_path.drop_prob == pytest.approx(0.1)
    with torch.no_grad():
        assert cli.model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 4)  # 1 channel in, one output per finding


def test_backbone_class_path_on_the_command_line(tmp_path):
    result = run_medres(
        "fit",
        "--config",
        "configs/chest_xray.yaml",
        "--data.root",
        str(tmp_path),
        "--print_config",
        "--model.backbone",
        '{"class_path": "monai.networks.nets.DenseNet121", "init_args": {"dropout_prob": 0.2}}',
        "--model.backbone_args",
        "{}",
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["model"]["backbone"]["class_path"] == "monai.networks.nets.DenseNet121"


def test_torchvision_init_config_loads_a_local_checkpoint(monkeypatch, tmp_path):
    # Our resnet50 state dict has torchvision's exact layout (tests/models), so it stands in for the real file.
    imagenet = create_model("resnet50", in_channels=3, num_classes=1000)
    torch.save(imagenet.state_dict(), tmp_path / "resnet50-imagenet.pth")
    cli = build_cli(
        monkeypatch,
        "--config",
        "configs/backbones/resnet50_torchvision_init.yaml",
        "--data.root",
        str(tmp_path),
        "--model.pretrained",
        str(tmp_path / "resnet50-imagenet.pth"),
    )
    backbone = cli.model.backbone
    torch.testing.assert_close(backbone.conv1.weight, imagenet.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(backbone.layer4[2].conv3.weight, imagenet.layer4[2].conv3.weight)
    assert backbone.fc.out_features == 4  # the ImageNet head is left out
