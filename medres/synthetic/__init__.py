"""Synthetic DICOM archives with learnable findings, for tests, demos and CI without patient data."""

from medres.synthetic.chest_xray import CHEST_XRAY_FINDINGS, render_chest_xray, synth_chest_xray
from medres.synthetic.ct import CT_FINDINGS, render_ct, synth_ct
from medres.synthetic.writing import SynthSummary

__all__ = [
    "CHEST_XRAY_FINDINGS",
    "CT_FINDINGS",
    "SynthSummary",
    "render_chest_xray",
    "render_ct",
    "synth_chest_xray",
    "synth_ct",
]
