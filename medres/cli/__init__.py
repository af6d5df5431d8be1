"""``medres`` entry point: LightningCLI for fit/validate/test/predict, plus synth, index, qc, score and the registry.

Every command is a thin layer over a function of the Python API, one module per command group; configuration flows
through LightningCLI YAML (``--config`` files merge in order) into typed ``__init__`` arguments.
"""

from __future__ import annotations

import logging
import os
import sys
from argparse import ArgumentError
from collections.abc import Callable, Sequence

from medres.cli import archive, experiments, labels, registry, scoring
from medres.cli.parsing import dataclass_command, function_command
from medres.cli.trainer import TRAINER_SUBCOMMANDS, MedresCLI, run_trainer_cli
from medres.tasks.lightning_tips import silence_lightning_tips
from medres.tracking.defaults import disable_telemetry

__all__ = ["COMMANDS", "MedresCLI", "main"]


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "synth": archive.synth,
    "labels": labels.labels_main,
    "index": archive.index,
    "qc": archive.qc,
    "score": function_command(scoring.score_command, "medres score"),
    "report-degradation": function_command(experiments.report_degradation_command, "medres report-degradation"),
    "evaluate": dataclass_command(registry.evaluate_command, "medres evaluate"),
    "promote": dataclass_command(registry.promote_command, "medres promote"),
    "rollback": function_command(registry.rollback_command, "medres rollback"),
    "champion-history": function_command(registry.champion_history_command, "medres champion-history"),
}

USAGE = """usage: medres COMMAND [options]

Train residual networks on DICOM archives, track them in MLflow, score archives.

commands:
  fit | validate | test | predict   Lightning trainer commands (--config FILE ..., --print_config, --help)
  synth chest-xray                  write a synthetic chest X-ray archive
  synth ct                          write a synthetic chest CT archive (series)
  synth rsna-pneumonia | vindr-cxr | luna16 | mimic-cxr
                                    write a synthetic archive in a public release's layout (true boxes or labels)
  labels import FORMAT SRC --out DIR   convert a public release's labels (rsna-pneumonia, vindr-cxr, luna16, mimic-cxr)
  index ARCHIVE --out FILE          header-only manifest of an archive (streaming, resumable)
  qc MANIFEST_OR_ARCHIVE [--out F]  per-series report of what would fail in training or scoring
  score --model M --input DIR --output DIR    score every file under DIR (resumable; --devices 2 --strategy ddp)
  score --model M --input dicomweb://HOST:PORT/PATH?FILTERS --output DIR   score a PACS query, SRs back
  report-degradation --experiment E --out DIR  table, curves and verdict of the degradation experiment
  evaluate --model M --data.root DIR        AUROC per finding on held-out data (default: the test split)
  promote --model NAME --version V --data.root DIR   gated move of @champion (exit 3: refused; --dry_run true)
  rollback --model NAME [--to V]            move @champion back to the previous champion
  champion-history --model NAME             promotions, refusals and rollbacks of @champion

Run `medres COMMAND --help` for a command's options.
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``medres COMMAND``; errors in arguments or configs exit 2 with one line naming the problem."""
    from_command_line = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    disable_telemetry()
    # MLflow draws a progress bar per model download; in batch jobs' logs it is noise (a user may still set it).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # INFO for medres's own messages only: codec libraries log every tile at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medres").setLevel(logging.INFO)
    silence_lightning_tips()  # no invitations to a cloud service in a tool that runs next to patient data
    if not os.environ.get("MEDRES_DEBUG"):
        # pydicom logs a traceback for every decoding plugin that fails on a damaged file; that failure is the
        # file's ledger row already (one line), so a hostile archive would bury the terminal in them (issue 21).
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return
    command, rest = args[0], args[1:]
    try:
        if command in TRAINER_SUBCOMMANDS:
            run_trainer_cli(None if from_command_line else args)
        elif command in COMMANDS:
            COMMANDS[command](rest)
        else:
            raise _UsageError(f"unknown command {command!r}; expected one of {[*TRAINER_SUBCOMMANDS, *COMMANDS]}")
    except Exception as err:
        # One line, never a traceback, unless MEDRES_DEBUG=1 asks for it. Bad input (a setting, a path, a model
        # reference) exits 2 naming it; anything else is a failure of the job and exits 1 with its type.
        if os.environ.get("MEDRES_DEBUG"):
            raise
        bad_input = _is_bad_input(err)
        _die(command, err, code=EXIT_BAD_INPUT if bad_input else EXIT_FAILED, with_type=not bad_input)


EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class _UsageError(Exception):
    pass


def _is_bad_input(err: Exception) -> bool:
    """Errors that mean the user asked for something that is not there or not valid (exit 2)."""
    from mlflow.exceptions import MlflowException

    # ValueError covers medres's own setting checks and PackageError; OSError missing, unreadable or unwritable paths;
    # MlflowException an unknown model, version or alias, or a store that cannot be opened.
    return isinstance(err, _UsageError | ArgumentError | ValueError | OSError | MlflowException)


def _die(command: str, err: BaseException, code: int, with_type: bool = False) -> None:
    text = getattr(err, "message", None) if type(err).__name__ == "MlflowException" else None
    message = " ".join(str(text or err).split())  # one line, however the library formatted it
    if with_type:
        message = f"{type(err).__name__}: {message} (MEDRES_DEBUG=1 shows the traceback)"
    print(f"medres {command}: error: {message}", file=sys.stderr)
    raise SystemExit(code)
