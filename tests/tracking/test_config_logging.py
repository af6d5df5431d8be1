from medres.tracking.config_logging import MAX_PARAM_CHARS, flatten_config
from medres.tracking.defaults import default_artifact_location, resolve_tracking_uri


def test_flatten_config_keys_and_values():
    config = {
        "model": {"backbone": "resnet18", "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.1}}},
        "data": {"findings": ["a", "b"], "labels": None, "empty": {}},
        "seed_everything": 0,
    }
    assert dict(flatten_config(config)) == {
        "model.backbone": "resnet18",
        "model.optimizer.class_path": "torch.optim.AdamW",
        "model.optimizer.init_args.lr": "0.1",
        "data.findings": "['a', 'b']",
        "data.labels": "None",
        "data.empty": "{}",
        "seed_everything": "0",
    }


def test_long_values_are_cut_to_the_param_limit():
    ((key, value),) = flatten_config({"x": "y" * 10_000})
    assert key == "x" and len(value) == MAX_PARAM_CHARS and value.endswith("...")


def test_tracking_uri_defaults_to_sqlite_in_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = resolve_tracking_uri()
    assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert default_artifact_location(uri) == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert default_artifact_location("http://127.0.0.1:5000") is None
