"""Lightning's invitations to its cloud services, kept out of medres's output.

PyTorch Lightning (2.5+) logs a "💡 Tip: ... litlogger ... Lightning Experiments platform" line whenever
a Trainer starts without its LitLogger (and a litmodels variant for checkpoints). medres runs next to
patient data and logs to MLflow on the user's own store; a command that prints an invitation to a
cloud service misleads the reader about where data goes. Lightning has no setting to turn the tips
off (Lightning-AI/pytorch-lightning#21294, open), so a logging filter drops exactly those records:
Lightning's other INFO lines (devices, parameter counts) still print.
"""

from __future__ import annotations

import logging

# Every Lightning tip starts so; rank_zero_info sends them through these loggers (lightning_utilities'
# rank_zero module logs through whichever Lightning distribution imported it last).
TIP_PREFIX = "💡 Tip:"
_RANK_ZERO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


def silence_lightning_tips() -> None:
    """Drop Lightning's "💡 Tip:" records in this process (idempotent); call once at program start."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropTips) for existing in logger.filters):
            logger.addFilter(_DropTips())
