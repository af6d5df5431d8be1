"""Where a run's code came from: medres's version and the git commit of the checkout it runs from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import medres

# MLflow's own tag for the commit; the UI links and shows it on the run page.
GIT_COMMIT_TAG = "mlflow.source.git.commit"


def git_state(path: Path) -> tuple[str, bool] | None:
    """The commit checked out at ``path`` and whether tracked files differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):  # no git binary (slim images), not a checkout, or too slow
        return None
    return commit, bool(status.strip())


def provenance_tags() -> dict[str, str]:
    """``medres.version`` and, when medres runs from a git checkout, its commit and whether it had local changes."""
    tags = {"medres.version": medres.__version__}
    state = git_state(Path(medres.__file__).resolve().parent)
    if state is not None:
        commit, dirty = state
        tags[GIT_COMMIT_TAG] = commit
        tags["medres.git.dirty"] = str(dirty).lower()
    return tags
