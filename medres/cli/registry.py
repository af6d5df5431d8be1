"""``medres evaluate``, ``promote``, ``rollback``, ``champion-history``: a registered model's gated @champion."""

from __future__ import annotations

import sys

from medres.lifecycle.evaluate import HeldOutData
from medres.lifecycle.promotion import Gates


def evaluate_command(model: str, data: HeldOutData, tracking_uri: str | None = None) -> None:
    """Evaluate a registered model on held-out data: AUROC per finding and macro.

    Args:
        model: models:/NAME/VERSION, models:/NAME/latest, models:/NAME@ALIAS or a .ckpt path.
        data: The held-out data (default the test split of the model's training archive).
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from rich.console import Console
    from rich.table import Table

    from medres.lifecycle.evaluate import evaluate_package, load_held_out, resolve_held_out
    from medres.tracking.registry import load_model

    resolved = load_model(model, tracking_uri)
    held_out = resolve_held_out(data, resolved.package)
    samples = load_held_out(held_out, resolved.package)
    evaluation = evaluate_package(resolved.package, samples, held_out)
    held = samples.fingerprint
    table = Table(title=f"{model} on held-out {held.split}: {held.samples} samples, {held.patients} patients")
    for column in ("finding", "pos", "neg", "AUROC"):
        table.add_column(column, justify="left" if column == "finding" else "right")
    for finding in evaluation.findings:
        auroc = evaluation.auroc[finding]  # NaN: the held-out labels of this finding hold one class only
        counts = [str(evaluation.positives[finding]), str(evaluation.negatives[finding])]
        table.add_row(finding, *counts, "n/a" if auroc != auroc else f"{auroc:.4f}")
    table.add_row("macro", "", "", f"{evaluation.macro:.4f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(f"{model}: macro AUROC {evaluation.macro:.4f} on {held.samples} held-out samples (data {held.digest[:12]})")


def promote_command(
    model: str,
    version: str,
    data: HeldOutData,
    gates: Gates | None = None,
    alias: str = "champion",
    dry_run: bool = False,
    tracking_uri: str | None = None,
) -> None:
    """Promote a registered version to @champion if it passes the gates against the current champion.

    Exits 0 when promoted, 3 when a gate refuses it (a dry run: when it would be refused), 2 on bad input.

    Args:
        model: Registered model name.
        version: Candidate version (a number or latest).
        data: The held-out data both models are evaluated on (default the test split of the candidate's archive).
        gates: Minimum macro AUROC and non-inferiority margins (default 0.5 and 0.02).
        alias: The champion alias.
        dry_run: Evaluate, compare and print the decision; record nothing, move nothing.
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from rich.console import Console

    from medres.lifecycle.promotion import EXIT_REFUSED, promote

    decision = promote(model, version, data, gates, alias=alias, tracking_uri=tracking_uri, dry_run=dry_run)
    Console(width=None if sys.stdout.isatty() else 160).print(decision.table())
    for note in decision.notes:
        print(f"note: {note}")
    print(decision.line() + (f" (run {decision.run_id})" if decision.run_id else ""))
    if not decision.promoted:
        raise SystemExit(EXIT_REFUSED)


def rollback_command(
    model: str,
    to: str | None = None,
    reason: str | None = None,
    alias: str = "champion",
    tracking_uri: str | None = None,
) -> None:
    """Move @champion back to the champion before the current one, or to a named version (no gates).

    Args:
        model: Registered model name.
        to: Version to restore; default the champion the current one replaced.
        reason: Why, recorded in the history and on the versions.
        alias: The champion alias.
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from medres.lifecycle.promotion import rollback

    entry = rollback(model, to_version=to, reason=reason, alias=alias, tracking_uri=tracking_uri)
    print(f"models:/{model}/{entry.version} is @{alias} again (was version {entry.previous})")


def champion_history_command(model: str, tracking_uri: str | None = None) -> None:
    """Print the recorded promotions, refusals and rollbacks of @champion, oldest first.

    Args:
        model: Registered model name.
        tracking_uri: MLflow store; default MLFLOW_TRACKING_URI, else ./mlflow.db.
    """
    from rich.console import Console

    from medres.lifecycle.promotion import champion_history, history_table

    entries = champion_history(model, tracking_uri)
    if not entries:
        print(f"{model}: no recorded champion history")
        return
    Console(width=None if sys.stdout.isatty() else 160).print(history_table(model, entries))
