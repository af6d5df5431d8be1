"""Resolve a model reference (registry URI or checkpoint path) to a local :class:`ModelPackage`."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from medres.package import ModelPackage, PackageError
from medres.tracking.defaults import disable_telemetry, existing_store, resolve_tracking_uri
from medres.tracking.model_logging import MODEL_ARTIFACT
from medres.tracking.pyfunc import PACKAGE_ARTIFACT

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


@dataclass(frozen=True)
class ResolvedModel:
    """A package and where it came from (written into every prediction row)."""

    package: ModelPackage
    name: str
    version: str


def resolve_model_version(uri: str, client: MlflowClient) -> tuple[str, str]:
    """``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS`` → (name, version)."""
    match = _MODELS_URI.match(uri)
    if match is None:
        raise ValueError(f"--model {uri}: expected models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS")
    name, version, alias = match["name"], match["version"], match["alias"]
    if alias is not None:
        return name, str(client.get_model_version_by_alias(name, alias).version)
    if version == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise ValueError(f"--model {uri}: registered model {name!r} has no versions")
        return name, str(max(int(v.version) for v in versions))
    if not version.isdigit():
        raise ValueError(f"--model {uri}: version {version!r} is not a number, 'latest' or an @alias")
    client.get_model_version(name, version)  # an unknown name or version raises here, not deep in a download
    return name, version


def load_model(reference: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Load a model package from the registry or from a medres checkpoint file.

    Args:
        reference: ``models:/NAME/VERSION``, ``models:/NAME/latest``, ``models:/NAME@ALIAS`` or a
            path to a ``.ckpt`` written by ``medres fit``.
        tracking_uri: Registry to ask; default ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``.
    """
    if not reference.startswith("models:/"):
        path = Path(reference)
        if not path.is_file():
            raise FileNotFoundError(f"--model {reference}: no such checkpoint file (or use models:/NAME/VERSION)")
        return ResolvedModel(ModelPackage.from_checkpoint(path), name=path.stem, version="checkpoint")
    disable_telemetry()
    uri = existing_store(resolve_tracking_uri(tracking_uri))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        name, version = resolve_model_version(reference, client)
    except mlflow.exceptions.MlflowException as err:
        raise ValueError(f"--model {reference}: {err.message} (tracking URI {uri})") from err
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp))
        package_dir = local / "artifacts" / PACKAGE_ARTIFACT
        if not package_dir.is_dir():
            raise PackageError(f"models:/{name}/{version} is not a medres model (no {MODEL_ARTIFACT} package)")
        return ResolvedModel(ModelPackage.load(package_dir), name=name, version=version)
