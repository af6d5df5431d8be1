"""The allow-list of what medres writes to a tracking server: tag keys, param keys and artifact paths.

Tracking servers are shared far more widely than the archive, so nothing read from a DICOM header may reach
them. medres logs only values it computes (counts, hashes, metrics, plots of pixels with index captions) under
the keys below; anything else is dropped with a warning naming the key, so a new logging call cannot leak by
accident. ``tests/test_end_to_end.py`` and ``tests/tasks/test_review_server.py`` plant identifying values in an archive
and search the store, artifacts, logs and outputs for them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

log = logging.getLogger(__name__)

# Run tags medres sets, and MLflow's own mlflow.* ones (source, git, user, description, logged models). Split sizes
# and label counts are not tags: they are the profiles of the run's dataset inputs (medres/tracking/datasets.py),
# whose source is a hash of the archive path, and they are in data_summary.json and the model card.
ALLOWED_TAG_KEYS = re.compile(
    r"""^(?:
        mlflow\.[\w.-]+
      | medres\.[a-z0-9_.]+
      | data\.fingerprint
    )$""",
    re.VERBOSE,
)
# Params are the flattened resolved config: its top-level sections only.
ALLOWED_PARAM_ROOTS = frozenset(
    {
        "seed_everything",
        "trainer",
        "model",
        "data",
        "checkpoint",
        "register",
        "review",
        "predictions",
        "ckpt_path",
        "weights_only",  # Lightning's fit flag for loading ckpt_path: a bool, and noise as a warning in every fit
        "optimizer",
        "lr_scheduler",
        "scoring",  # a scoring run's settings (medres/scoring/report.py): model, input hash and counts, chunking
    }
)
# Artifacts of a fit's run: the config, the data summary, checkpoints, the review and the logged model.
ALLOWED_ARTIFACTS = re.compile(
    r"""^(?:
        config\.yaml | config\.resume-\d+\.yaml | data_summary\.json
      | review(?:/[\w.-]+)?
      | (?:best|last)[\w=.-]*(?:/[\w=.-]+)*
      | model(?:/.*)?
      | scoring/[\w.-]+
    )$""",
    re.VERBOSE,
)


def allowed_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags whose keys are on the allow-list; the others are dropped with a warning."""
    kept = {key: value for key, value in tags.items() if ALLOWED_TAG_KEYS.match(key)}
    for key in sorted(set(tags) - set(kept)):
        log.warning("not logging tag %r: not on medres's allow-list (medres/tracking/privacy.py)", key)
    return kept


def allowed_params(params: Mapping[str, str]) -> dict[str, str]:
    """The params under a known config section; the others are dropped with a warning."""
    kept = {key: value for key, value in params.items() if key.split(".", 1)[0] in ALLOWED_PARAM_ROOTS}
    for key in sorted(set(params) - set(kept)):
        log.warning("not logging param %r: not a section of medres's config (medres/tracking/privacy.py)", key)
    return kept


def is_allowed_artifact(path: str) -> bool:
    """Whether an artifact path of a fit's run is one medres writes."""
    return ALLOWED_ARTIFACTS.match(path) is not None
