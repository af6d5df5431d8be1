"""Where a medres model package keeps its parts: the names the weight loader needs to recognise one.

The package itself (:mod:`medres.package`) sits above the data stage; these constants sit here so that
:mod:`medres.models.weights` can read packages and medres checkpoints without importing upwards.
"""

CONTRACT_FILE = "package.json"  # the contract: backbone, findings, preprocessing, thresholds, versions
WEIGHTS_FILE = "weights.safetensors"  # the backbone's tensors
CHECKPOINT_KEY = "medres"  # a Lightning checkpoint's key holding the package contract
BACKBONE_PREFIX = "backbone."  # a task's state-dict prefix of the backbone's tensors
DETECTOR_PREFIX = "detector.network."  # a lesion-detection task's state-dict prefix of the detector network's tensors
