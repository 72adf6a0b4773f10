"""Hyperparameter search with Optuna: one family or several, budgets, resume, distributed workers.

How a study runs (one module per concern):

- :mod:`.job`: the frozen :class:`TuneJob` every part is given (and workers get as JSON);
- :mod:`.problem`: the data, featurized once per featurizer recipe and fold, never per trial;
- :mod:`.space`: each family's search space scoped to the study, ``--param`` values, the plan;
- :mod:`.scheduler`: the cost-aware choice of the next family (``auto``), sampler and pruner;
- :mod:`.budget`: the wall-clock deadline and each trial's share of it;
- :mod:`.objective`: one trial (defaults first, then proposals), pruned on intermediate scores;
- :mod:`.kept`: the fitted models of each family's best trials, kept for ``ensemble --from-study``;
- :mod:`.session`: the study created or resumed (same problem only);
- :mod:`.workers`: the budgeted trial loop and the worker processes sharing the study;
- :mod:`.final`: the saved model: the best trials' ensemble where it is better on valid, else the best;
- :mod:`.report`: the result, the best parameters, trials, retrained model and HTML page;
- :mod:`.command`: :func:`tune`, the entry point the CLI calls.

Storage and the artifact store are in :mod:`mlsys_cli.models.study`.
"""

from mlsys_cli.models.tuning.command import run_job, tune
from mlsys_cli.models.tuning.job import TuneJob, TuneRequest
from mlsys_cli.models.tuning.report import TuneOutputs, TuneResult

__all__ = ["TuneJob", "TuneOutputs", "TuneRequest", "TuneResult", "run_job", "tune"]
