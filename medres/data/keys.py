"""Pseudonymous patient keys: what links a patient's images without carrying the PatientID anywhere.

Every split, sampler, bootstrap and prediction row groups by this key; the raw PatientID is read from the header, hashed
and dropped in the same step (``medres.data.manifest``) and never reaches a manifest, a log or an MLflow run.
"""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["DEFAULT_SALT", "SALT_ENV", "patient_key", "patient_key_salt"]

SALT_ENV = "MEDRES_PATIENT_KEY_SALT"
# Used when the site sets no salt: keys stay stable and never show the raw ID, but anyone holding
# the ID list can recompute them. Production sites set MEDRES_PATIENT_KEY_SALT to a secret.
DEFAULT_SALT = "medres-default-salt"


def patient_key_salt() -> str:
    """The salt for pseudonymous patient keys, from ``MEDRES_PATIENT_KEY_SALT`` (never from a logged config)."""
    return os.environ.get(SALT_ENV) or DEFAULT_SALT


def patient_key(patient_id: str, salt: str) -> str:
    """Pseudonymous patient key: HMAC-SHA256 of the PatientID keyed by ``salt``, first 16 hex chars.

    The salt is what makes keys non-reversible by dictionary attack on known IDs; keep it secret and
    stable (changing it changes every key, hence every split).
    """
    return hmac.new(salt.encode("utf-8"), patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
