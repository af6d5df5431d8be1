"""A gated ``@champion`` alias: promote a registered version only when it passes the gates, record every decision.

``promote`` evaluates the candidate version and the current champion on the same held-out samples
(:mod:`medres.lifecycle.evaluate`), applies the :class:`Gates` and moves the alias only when every gate passes.
Each decision, promoted or refused, is recorded three ways:

- on the candidate version: a line appended to its description (decision, reasons, macro AUROC of both models, the
  held-out data's counts and fingerprint, the run id) and only the tags a reviewer filters versions by
  (:data:`VERSION_TAGS`: the decision, the failed gates, the decision's run);
- as a run in the ``medres-promotion`` experiment with both models' per-finding AUROCs, the gates, the data
  fingerprint and ``decision.json``: the full evidence;
- in the alias history, a JSON list in the registered model's ``medres.champion_history`` tag, because the MLflow
  registry keeps no history of aliases itself.

``rollback`` moves the alias back to the champion before the current one (or to a named version) and records that
the same way. Only counts, hashes and AUROCs are recorded: no paths, no patient keys.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from rich.table import Table

from medres.lifecycle.evaluate import (
    DataFingerprint,
    Evaluation,
    HeldOutData,
    evaluate_package,
    load_held_out,
    resolve_held_out,
)
from medres.tracking.defaults import default_artifact_location, disable_telemetry, existing_store, resolve_tracking_uri
from medres.tracking.registry import load_model, resolve_model_version

CHAMPION_ALIAS = "champion"
PROMOTION_EXPERIMENT = "medres-promotion"
HISTORY_TAG = "medres.champion_history"
PROMOTION_PREFIX = "medres.promotion."
ROLLBACK_PREFIX = "medres.rollback."
# The tags a decision leaves on a version: what a reviewer filters the registry by
# (``tags.`medres.promotion.decision` = 'refused'``). Everything else is in the description and the decision's run,
# rather than a column of tags beside the model card (issue 21, item 5).
VERSION_TAGS = (f"{PROMOTION_PREFIX}decision", f"{PROMOTION_PREFIX}failed_gates", f"{PROMOTION_PREFIX}run_id")
DESCRIPTION_TAG = "mlflow.note.content"  # MLflow shows this run tag as the run's description
EXIT_REFUSED = 3  # `medres promote` exit status for a refusal, distinct from errors (1, 2), so pipelines can branch
# MLflow's SQL stores declare registered-model tag values and version descriptions as String(5000). SQLite does not
# enforce the length but MySQL and PostgreSQL do (the API itself allows 100,000), so the history and the
# descriptions keep to 5,000 characters on every store, dropping their oldest entries or lines first.
MAX_STORED_TEXT = 5000

Action = Literal["promote", "refuse", "rollback"]
METRIC_LABELS = {"auroc": "AUROC", "cpm": "CPM", "sens_at_1fp": "sensitivity at 1 FP/image", "map_0.1": "mAP@0.1",
                 "map_0.5": "mAP@0.5"}  # fmt: skip


@dataclass(frozen=True)
class Gates:
    """What a candidate must pass to become the champion.

    ``min_macro_auroc`` defaults to 0.5: a model that ranks no better than chance on held-out data must never be
    the champion, while the bar above chance is the site's choice. The non-inferiority margin defaults to 0.02
    AUROC, small enough to catch a finding that got worse; on held-out sets of a few dozen samples AUROC moves by
    more than that from sampling alone, so small sets need a wider margin (or more held-out data).

    Args:
        metric: What the gates compare: ``auroc`` (any model), or for lesion detectors ``cpm`` (LUNA16's mean FROC
            sensitivity), ``sens_at_1fp``, ``map_0.1`` or ``map_0.5``.
        min_macro_auroc: The candidate's macro value of ``metric`` (mean over judged findings) must reach this (the
            name is the default metric's).
        non_inferiority_margin: For every finding shared with the champion and judged on the held-out data, the
            candidate's AUROC must be at least the champion's minus this margin.
        finding_margins: Per-finding margins that replace ``non_inferiority_margin`` for the findings they name.
    """

    min_macro_auroc: float = 0.5
    non_inferiority_margin: float = 0.02
    metric: Literal["auroc", "cpm", "sens_at_1fp", "map_0.1", "map_0.5"] = "auroc"
    finding_margins: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_macro_auroc <= 1.0:
            raise ValueError(f"--gates.min_macro_auroc={self.min_macro_auroc}: must be in [0, 1]")
        for finding, margin in {"": self.non_inferiority_margin, **self.finding_margins}.items():
            if not 0.0 <= margin <= 1.0:
                setting = f"finding_margins[{finding!r}]" if finding else "non_inferiority_margin"
                raise ValueError(f"--gates.{setting}={margin}: must be in [0, 1]")

    def margin(self, finding: str) -> float:
        """The non-inferiority margin of ``finding``."""
        return self.finding_margins.get(finding, self.non_inferiority_margin)


@dataclass(frozen=True)
class GateCheck:
    """One gate applied to one quantity: ``macro`` or a finding's non-inferiority."""

    gate: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class HistoryEntry:
    """One change (or refused change) of the champion alias.

    Args:
        action: ``promote``, ``refuse`` (a candidate failed a gate) or ``rollback``.
        version: The version promoted, refused, or restored.
        previous: The champion before (for a refusal: the champion it was compared with), if any.
        time: UTC time, ISO 8601.
        reasons: Why (gate results, or the rollback's reason).
    """

    action: Action
    version: str
    previous: str | None
    time: str
    reasons: list[str]


@dataclass
class PromotionDecision:
    """The outcome of one ``promote``: both models' evaluations, the gate checks and the decision."""

    name: str
    candidate_version: str
    champion_version: str | None
    candidate: Evaluation
    champion: Evaluation | None
    checks: list[GateCheck]
    notes: list[str]
    fingerprint: DataFingerprint
    gates: Gates
    alias: str = CHAMPION_ALIAS
    time: str = ""
    dry_run: bool = False
    run_id: str | None = None

    @property
    def promoted(self) -> bool:
        """Whether every gate passed."""
        return all(check.passed for check in self.checks)

    @property
    def decision(self) -> Literal["promoted", "refused"]:
        """``promoted`` or ``refused`` (what a dry run would decide)."""
        return "promoted" if self.promoted else "refused"

    @property
    def reasons(self) -> list[str]:
        """The failed gates of a refusal; every passed gate of a promotion."""
        return [check.detail for check in self.checks if check.passed == self.promoted]

    def line(self) -> str:
        """One line: the decision and why."""
        would = "would be " if self.dry_run else ""
        against = f"against version {self.champion_version}" if self.champion_version else "(no current champion)"
        return (
            f"models:/{self.name}/{self.candidate_version} {would}{self.decision} as @{self.alias} {against}: "
            + "; ".join(self.reasons)
        )

    def table(self) -> Table:
        """Per-finding AUROC of both models with each finding's gate, and the macro row."""
        data = self.fingerprint
        table = Table(
            title=f"held-out {data.split}: {data.samples} samples, {data.patients} patients, data {data.digest[:12]}"
        )
        for column in ("finding", "pos", "neg", f"v{self.candidate_version}"):
            table.add_column(column, justify="left" if column == "finding" else "right")
        if self.champion is not None:
            table.add_column(f"v{self.champion_version} (champion)", justify="right")
            table.add_column("margin", justify="right")
        table.add_column("gate")
        by_gate = {check.gate: check for check in self.checks}
        for finding in self.candidate.findings:
            row = [finding, str(self.candidate.positives[finding]), str(self.candidate.negatives[finding])]
            row.append(_fmt(self.candidate.scores().get(finding, math.nan)))
            if self.champion is not None:
                theirs = self.champion.scores()
                row.append(_fmt(theirs[finding]) if finding in theirs else "—")
                row.append(f"{self.gates.margin(finding):.3f}" if finding in theirs else "")
            check = by_gate.get(f"non_inferiority:{finding}")
            row.append("" if check is None else ("pass" if check.passed else "FAIL"))
            table.add_row(*row)
        macro = ["macro", "", "", _fmt(self.candidate.macro)]
        if self.champion is not None:
            macro += [_fmt(self.champion.macro), f"≥ {self.gates.min_macro_auroc:.3f}"]
        check = by_gate.get("min_macro_auroc")
        table.add_row(*macro, "" if check is None else ("pass" if check.passed else "FAIL"))
        return table

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``decision.json``."""
        return {
            "model": self.name,
            "candidate_version": self.candidate_version,
            "champion_version": self.champion_version,
            "alias": self.alias,
            "decision": self.decision,
            "reasons": self.reasons,
            "checks": [asdict(check) for check in self.checks],
            "notes": self.notes,
            "gates": asdict(self.gates),
            "data": asdict(self.fingerprint),
            "candidate": self.candidate.to_dict(),
            "champion": None if self.champion is None else self.champion.to_dict(),
            "time": self.time,
            "dry_run": self.dry_run,
        }


# ---- gates ---------------------------------------------------------------------------------------
def judge(candidate: Evaluation, champion: Evaluation | None, gates: Gates) -> list[GateCheck]:
    """Apply the gates: the absolute macro AUROC always, non-inferiority per shared finding when there is a champion.

    A finding without an AUROC on the held-out data (one class only) cannot be judged and is not checked; with a
    champion but no shared judged finding the candidate fails, since non-inferiority cannot be shown.
    """
    macro = candidate.macro
    label = METRIC_LABELS[gates.metric]
    if math.isnan(macro):
        why = "has positive and negative held-out labels" if gates.metric == "auroc" else "has a held-out true box"
        checks = [GateCheck("min_macro_auroc", False, f"no finding {why}")]
    else:
        passed = macro >= gates.min_macro_auroc
        relation = "≥" if passed else "<"
        checks = [
            GateCheck("min_macro_auroc", passed, f"macro {label} {macro:.4f} {relation} {gates.min_macro_auroc:.4f}")
        ]
    if champion is None:
        return checks
    compared = [f for f in candidate.judged if f in champion.judged]
    if not compared:
        checks.append(GateCheck("non_inferiority", False, "no finding judged for both candidate and champion"))
    for finding in compared:
        ours, theirs = candidate.scores()[finding], champion.scores()[finding]
        margin = gates.margin(finding)
        passed = ours >= theirs - margin
        relation = "≥" if passed else "<"
        detail = f"{finding} {label} {ours:.4f} {relation} champion {theirs:.4f} − {margin:.4f}"
        checks.append(GateCheck(f"non_inferiority:{finding}", passed, detail))
    return checks


# ---- promote -------------------------------------------------------------------------------------
def promote(
    name: str,
    version: str,
    data: HeldOutData,
    gates: Gates | None = None,
    alias: str = CHAMPION_ALIAS,
    tracking_uri: str | None = None,
    dry_run: bool = False,
) -> PromotionDecision:
    """Evaluate a candidate version against ``@alias`` on held-out data and move the alias if it passes the gates.

    Args:
        name: Registered model name.
        version: Candidate version (a number or ``latest``).
        data: The held-out data (default: the test split of the candidate's training archive).
        gates: The gates; default :class:`Gates()`.
        alias: The alias that marks the champion.
        tracking_uri: Store; default ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``.
        dry_run: Evaluate and decide, record nothing and leave the alias where it is.

    Raises:
        ValueError: If the model, version or data cannot be found, the candidate already is the champion, or the
            two models cannot be compared (2D against 3D).
    """
    gates = gates or Gates()
    client, uri = _client(tracking_uri)
    version = _existing_version(client, name, version, uri)
    champion_version = _aliases(client, name, uri).get(alias)
    if champion_version == version:
        raise ValueError(f"models:/{name}/{version} already is @{alias}; nothing to decide")
    candidate = load_model(f"models:/{name}/{version}", uri).package
    held_out = resolve_held_out(data, candidate)
    samples = load_held_out(held_out, candidate)
    if gates.metric != "auroc" and not candidate.is_detector:
        raise ValueError(f"--gates.metric={gates.metric}: models:/{name}/{version} is not a lesion detector")
    candidate_eval = evaluate_package(candidate, samples, held_out, gate_metric=gates.metric)
    champion_eval, notes = None, []
    if champion_version is not None:
        champion = load_model(f"models:/{name}/{champion_version}", uri).package
        if champion.preprocessing.spatial_dims != candidate.preprocessing.spatial_dims:
            raise ValueError(
                f"models:/{name}/{version} is {candidate.preprocessing.spatial_dims}D and @{alias} (version "
                f"{champion_version}) {champion.preprocessing.spatial_dims}D: they take different samples"
            )
        shared = [f for f in candidate.findings if f in champion.findings]
        if set(candidate.findings) != set(champion.findings):
            notes.append(
                f"findings differ: compared on the shared {shared}; candidate only "
                f"{sorted(set(candidate.findings) - set(champion.findings))}, champion only "
                f"{sorted(set(champion.findings) - set(candidate.findings))}"
            )
        if champion.selection != candidate.selection:
            notes.append("selection differs: both models evaluated on the candidate's selected samples")
        if champion.is_detector != candidate.is_detector:
            raise ValueError(
                f"models:/{name}/{version} and @{alias} (version {champion_version}): one is a lesion detector and the "
                "other a classifier; compare them with --gates.metric auroc on separate registered names"
            )
        champion_eval = evaluate_package(champion, samples, held_out, findings=shared, gate_metric=gates.metric)
    decision = PromotionDecision(
        name=name,
        candidate_version=version,
        champion_version=champion_version,
        candidate=candidate_eval,
        champion=champion_eval,
        checks=judge(candidate_eval, champion_eval, gates),
        notes=notes,
        fingerprint=samples.fingerprint,
        gates=gates,
        alias=alias,
        time=_now(),
        dry_run=dry_run,
    )
    if not dry_run:
        _record_decision(client, uri, decision)
    return decision


def _record_decision(client: MlflowClient, uri: str, decision: PromotionDecision) -> None:
    """Run, version tags, description, alias (when promoted) and history, in that order.

    The alias moves after the evidence is written, so a crash leaves a recorded decision, never an unexplained alias.
    """
    name, version = decision.name, decision.candidate_version
    decision.run_id = _log_decision_run(client, uri, decision)
    for key, value in _decision_tags(decision).items():
        client.set_model_version_tag(name, version, key, value)
    data = decision.fingerprint
    summary = (
        f"macro AUROC {_fmt(decision.candidate.macro)}"
        + (f" vs {_fmt(decision.champion.macro)}" if decision.champion is not None else "")
        + f" on {data.split} ({data.samples} samples, {data.patients} patients, data {data.digest[:12]}); "
        f"run {decision.run_id}" + (f"; {'; '.join(decision.notes)}" if decision.notes else "")
    )
    if decision.promoted:
        was = f"was version {decision.champion_version}" if decision.champion_version else "first champion"
        line = f"{decision.time} promoted to @{decision.alias} ({was}): {summary}"
    else:
        line = f"{decision.time} refused as @{decision.alias}: {'; '.join(decision.reasons)}; {summary}"
    _append_description(client, name, version, line)
    if decision.promoted:
        client.set_registered_model_alias(name, decision.alias, version)
        if decision.champion_version is not None:
            _append_description(
                client,
                name,
                decision.champion_version,
                f"{decision.time} replaced as @{decision.alias} by version {version} (run {decision.run_id})",
            )
    action: Action = "promote" if decision.promoted else "refuse"
    entry = HistoryEntry(action, version, decision.champion_version, decision.time, decision.reasons)
    _append_history(client, name, uri, entry)


def _decision_tags(decision: PromotionDecision) -> dict[str, str]:
    """:data:`VERSION_TAGS`: ``promoted``/``refused``, the failed gates (comma-separated, ``none``) and the run."""
    failed = [check.gate for check in decision.checks if not check.passed]
    tags = {
        f"{PROMOTION_PREFIX}decision": decision.decision,
        f"{PROMOTION_PREFIX}failed_gates": ",".join(failed) or "none",
        f"{PROMOTION_PREFIX}run_id": decision.run_id or "",
    }
    return tags


def _log_decision_run(client: MlflowClient, uri: str, decision: PromotionDecision) -> str:
    """One run in ``medres-promotion`` with both models' AUROCs, the gates and the decision; returns its id."""
    experiment = client.get_experiment_by_name(PROMOTION_EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(PROMOTION_EXPERIMENT, artifact_location=default_artifact_location(uri))
    )
    run = client.create_run(
        experiment_id,
        run_name=f"{decision.name}-v{decision.candidate_version}-{decision.decision}",
        tags={
            "medres.model": decision.name,
            "medres.candidate_version": decision.candidate_version,
            "medres.champion_version": decision.champion_version or "",
            f"{PROMOTION_PREFIX}decision": decision.decision,
            DESCRIPTION_TAG: decision.line(),
        },
    )
    run_id: str = run.info.run_id
    now = int(time.time() * 1000)
    metrics = {"candidate/auroc_macro": decision.candidate.macro}
    metrics.update({f"candidate/auroc_{f}": v for f, v in decision.candidate.auroc.items()})
    if decision.champion is not None:
        metrics["champion/auroc_macro"] = decision.champion.macro
        metrics.update({f"champion/auroc_{f}": v for f, v in decision.champion.auroc.items()})
    metrics.update({"data/samples": decision.fingerprint.samples, "data/patients": decision.fingerprint.patients})
    metrics["promoted"] = float(decision.promoted)
    params = {
        "model": decision.name,
        "candidate_version": decision.candidate_version,
        "champion_version": decision.champion_version or "none",
        "data.split": decision.fingerprint.split,
        "data.fingerprint": decision.fingerprint.digest,
        "gates.min_macro_auroc": str(decision.gates.min_macro_auroc),
        "gates.non_inferiority_margin": str(decision.gates.non_inferiority_margin),
        "gates.finding_margins": json.dumps(decision.gates.finding_margins, sort_keys=True),
    }
    client.log_batch(
        run_id,
        # An unjudged finding (NaN) is left out rather than logged as NaN, which plots badly in the UI.
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if not math.isnan(v)],
        params=[Param(k, v) for k, v in params.items()],
    )
    client.log_dict(run_id, decision.to_dict(), "decision.json")
    client.set_terminated(run_id)
    return run_id


# ---- rollback and history ------------------------------------------------------------------------
def rollback(
    name: str,
    to_version: str | None = None,
    reason: str | None = None,
    alias: str = CHAMPION_ALIAS,
    tracking_uri: str | None = None,
) -> HistoryEntry:
    """Move ``@alias`` back to the champion the current one replaced, or to ``to_version``; no gates apply.

    Repeated rollbacks walk back through the promotions: each undoes the promotion that made the current champion.

    Args:
        name: Registered model name.
        to_version: Version to restore; default the champion before the current one (from the history).
        reason: Why, recorded with the rollback.
        alias: The alias that marks the champion.
        tracking_uri: Store; default ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``.

    Returns:
        The recorded history entry (``version`` is the restored champion).

    Raises:
        ValueError: If the model or version does not exist, or the history names no earlier champion.
    """
    client, uri = _client(tracking_uri)
    current = _aliases(client, name, uri).get(alias)
    if to_version is not None:
        target = _existing_version(client, name, str(to_version), uri)
        if target == current:
            raise ValueError(f"models:/{name}/{target} already is @{alias}")
    else:
        target = _previous_champion(name, current, _history(client, name, uri), alias)
    stamp = _now()
    reasons = [f"rollback from version {current}" if current else "rollback (no current champion)"]
    if reason:
        reasons.append(reason)
    client.set_registered_model_alias(name, alias, target)
    # The version tags say only which versions a rollback touched; its time and reason are in the descriptions
    # and the history.
    client.set_model_version_tag(name, target, f"{ROLLBACK_PREFIX}from", current or "")
    because = f": {reason}" if reason else ""
    origin = f" from version {current}" if current else ""
    _append_description(client, name, target, f"{stamp} @{alias} again by rollback{origin}{because}")
    if current is not None:
        client.set_model_version_tag(name, current, f"{ROLLBACK_PREFIX}demoted", stamp)
        _append_description(client, name, current, f"{stamp} rolled back: @{alias} moved to version {target}{because}")
    entry = HistoryEntry("rollback", target, current, stamp, reasons)
    _append_history(client, name, uri, entry)
    return entry


def champion_history(name: str, tracking_uri: str | None = None) -> list[HistoryEntry]:
    """The recorded alias history of registered model ``name``, oldest first (empty if none)."""
    client, uri = _client(tracking_uri)
    return _history(client, name, uri)


def _history(client: MlflowClient, name: str, uri: str) -> list[HistoryEntry]:
    text = _registered_model(client, name, uri).tags.get(HISTORY_TAG)
    if not text:
        return []
    try:
        return [HistoryEntry(**entry) for entry in json.loads(text)]
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"registered model {name!r}: tag {HISTORY_TAG} is not a medres history: {err}") from err


def history_table(name: str, entries: list[HistoryEntry]) -> Table:
    """The alias history as a table, oldest first."""
    table = Table(title=f"{name}: champion history")
    for column in ("time (UTC)", "action", "version", "previous", "reasons"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.time, entry.action, entry.version, entry.previous or "", "; ".join(entry.reasons))
    return table


def _previous_champion(name: str, current: str | None, history: list[HistoryEntry], alias: str) -> str:
    """The version the promotion of ``current`` replaced: undoing that promotion is the rollback."""
    if not history:
        raise ValueError(f"registered model {name!r} has no champion history to roll back; name a version with --to")
    if current is None:
        raise ValueError(f"registered model {name!r} has no @{alias} to roll back; name a version with --to")
    made = next((e for e in reversed(history) if e.action == "promote" and e.version == current), None)
    if made is None:
        raise ValueError(
            f"@{alias} of {name!r} (version {current}) was not set by medres promote; name a version with --to"
        )
    if made.previous is None:
        raise ValueError(f"version {current} is the first @{alias} of {name!r}: there is no earlier one to restore")
    return made.previous


def _append_history(client: MlflowClient, name: str, uri: str, entry: HistoryEntry) -> None:
    """Add ``entry`` to the history tag, keeping the newest entries that fit in :data:`MAX_STORED_TEXT`."""
    entries = [asdict(e) for e in _history(client, name, uri)] + [asdict(entry)]
    text = json.dumps(entries)
    while len(text) > MAX_STORED_TEXT and len(entries) > 1:
        entries.pop(0)
        text = json.dumps(entries)
    if len(text) > MAX_STORED_TEXT:  # a single entry with very long reasons: keep its decision, cut the reasons
        entries[0]["reasons"] = [json.dumps(entries[0]["reasons"])[: MAX_STORED_TEXT // 2] + "…"]
        text = json.dumps(entries)
    client.set_registered_model_tag(name, HISTORY_TAG, text)


def _append_description(client: MlflowClient, name: str, version: str, line: str) -> None:
    """Append a line to the version's description, dropping its oldest lines if it would not fit."""
    current = client.get_model_version(name, version).description or ""
    lines = [*current.splitlines(), line]
    while len("\n".join(lines)) > MAX_STORED_TEXT and len(lines) > 1:
        lines.pop(0)
    client.update_model_version(name, version, description="\n".join(lines)[:MAX_STORED_TEXT])


# ---- registry helpers ----------------------------------------------------------------------------
def _client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    disable_telemetry()
    uri = existing_store(resolve_tracking_uri(tracking_uri))
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _registered_model(client: MlflowClient, name: str, uri: str) -> Any:
    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        raise ValueError(f"--model {name}: no such registered model (tracking URI {uri}): {err.message}") from err


def _aliases(client: MlflowClient, name: str, uri: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in (_registered_model(client, name, uri).aliases or {}).items()}


def _existing_version(client: MlflowClient, name: str, version: str, uri: str) -> str:
    """``version`` (a number or ``latest``) of ``name`` as a version number that exists."""
    _registered_model(client, name, uri)
    try:
        _, number = resolve_model_version(f"models:/{name}/{version}", client)
        client.get_model_version(name, number)
    except MlflowException as err:
        raise ValueError(f"models:/{name}/{version}: no such registered version (tracking URI {uri})") from err
    return number


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
