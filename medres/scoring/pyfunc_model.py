"""MLflow "models from code" entry: the file MLflow stores with a medres model and runs to load it.

It only builds :class:`~medres.scoring.serving.MedresPyfuncModel` from the installed medres; the weights
and contract come from the model's ``package`` artifact. Keeping it this small is the point: it is the only
code stored with the model, and a reviewer can read all of it in the model's ``code/`` folder.
"""

import mlflow

from medres.scoring.serving import MedresPyfuncModel

mlflow.models.set_model(MedresPyfuncModel())
