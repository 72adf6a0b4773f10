"""The ``mlp`` family: a multilayer perceptron in torch on featurized float matrices.

The network sees the featurizer's output (the ``mlp`` preset one-hots and scales), standardizes
its inputs once more with statistics of the training rows (so any preset works), and is trained
with AdamW and early stopping on the validation set, restoring the best weights. Classification
uses a softmax head (binary too, two logits); regression predicts the standardized target and
stores its mean and standard deviation.

Training is deterministic on CPU for a given seed: the seed drives weight initialization, dropout
and the batch order (a seeded ``torch.Generator``), deterministic algorithms are switched on and
the fit runs on ``n_threads`` threads (1 by default, since a different thread count may change
the order of floating-point sums). The global torch RNG and settings are restored afterwards.

Persistence never pickles: weights go to a safetensors member and the architecture, scalings and
training summary to a JSON member. :meth:`MLPEstimator.to_torch_module` folds both
standardizations into the first and last linear layers and returns a plain ``nn.Sequential``
(after a clamp of each input to its training range: no unbounded extrapolation)
that maps the float features to probabilities (or to the prediction): what
:meth:`MLPEstimator.predict_proba` runs and what ``MLPFamily.to_onnx`` exports (it reads
``torch_output_`` to know which of the two the module returns).

torch is the optional ``nn`` extra and is imported inside functions only.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.family import Family

NAME = "mlp"
NN_EXTRA_MESSAGE = "the mlp family needs the nn extra: pip install 'mlsys[nn]'"
CONFIG_FORMAT = 1
WEIGHTS_MEMBER = "mlp.safetensors"
CONFIG_MEMBER = "mlp.json"
TASKS = ("binary", "multiclass", "regression")
PREDICT_BATCH = 65536
ONNX_OPSET = 17  # the opset every mlsys graph uses (models/onnx_graphs.py), so graphs compose

# name -> (default, check, what the check means); the single source of the valid parameters.
PARAMS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "hidden_layers": (2, lambda v: isinstance(v, int) and 0 <= v <= 16, "an integer in [0, 16]"),
    "width": (256, lambda v: isinstance(v, int) and 1 <= v <= 8192, "an integer in [1, 8192]"),
    "dropout": (0.1, lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (1e-4, lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "lr": (1e-3, lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "batch_size": (256, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "max_epochs": (200, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "patience": (12, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "valid_fraction": (0.1, lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "n_threads": (1, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "warm_start": (False, lambda v: isinstance(v, bool), "true or false"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _torch() -> Any:
    """Import torch, or fail with the one line that says how to get it (exit 3)."""
    try:
        import safetensors.torch  # noqa: F401  (persistence needs it as much as torch)
        import torch
    except ModuleNotFoundError:
        raise InputError(NN_EXTRA_MESSAGE, "or choose another family: --model xgboost") from None
    return torch


def warm_up() -> None:
    """Pay torch's one-time costs of a first fit in this process (its kernels and thread pools
    set up: 1.2-4.4 s measured, then 0.1-0.2 s for the same fit again) on 16 random rows.

    A tuning run calls it before the first trial, so no trial's measured fit carries them: the
    first MLP trial's time is what the scheduler prices the family at and what the refit of that
    trial on train + valid is estimated from (3.4 s estimated for a 1.2 s refit)."""
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 2))
    MLPEstimator(task="regression", hidden_layers=1, width=8, max_epochs=2, valid_fraction=0.0).fit(X, X[:, 0])


def _build_net(n_in: int, n_out: int, hidden_layers: int, width: int, dropout: float) -> Any:
    torch = _torch()
    layers: list[Any] = []
    size = n_in
    for _ in range(hidden_layers):
        layers += [torch.nn.Linear(size, width), torch.nn.ReLU()]
        if dropout > 0:
            layers.append(torch.nn.Dropout(dropout))
        size = width
    layers.append(torch.nn.Linear(size, n_out))
    return torch.nn.Sequential(*layers)


def _clamp_module(lo: Any, hi: Any) -> Any:
    """A module clamping each input feature to ``[lo, hi]`` (exports to ONNX as Max and Min)."""
    torch = _torch()

    class Clamp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("lo", torch.from_numpy(lo.astype("float32")))
            self.register_buffer("hi", torch.from_numpy(hi.astype("float32")))

        def forward(self, x: Any) -> Any:
            return torch.maximum(torch.minimum(x, self.hi), self.lo)

    return Clamp()


def _linear_layers(net: Any) -> list[Any]:
    torch = _torch()
    return [m for m in net if isinstance(m, torch.nn.Linear)]


@dataclass(frozen=True)
class _Run:
    """How one fit runs: its deadline (``time.monotonic``), progress bar and per-epoch callback."""

    deadline: float | None
    progress: Any
    callback: Callable[[int, float], None] | None

    def report(self, record: Mapping[str, Any], max_epochs: int) -> None:
        """Show an epoch's record, and hand its validation loss to the callback (tune's pruning)."""
        epoch, valid = record["epoch"], record["valid_loss"] is not None
        if self.progress is not None:
            shown = record["valid_loss"] if valid else record["train_loss"]
            self.progress.update(completed=epoch, total=max_epochs,
                                 description=f"mlp: epoch {epoch}, {'valid' if valid else 'train'} loss {shown:.4g}")
        if self.callback is not None and valid:
            self.callback(epoch, record["valid_loss"])


class MLPEstimator:
    """A multilayer perceptron for binary, multiclass or regression tasks.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    n_classes : int
        Number of classes (classification); ``y`` holds codes ``0 .. n_classes - 1``.
    hidden_layers, width : int
        Depth and width of the hidden part (ReLU; ``hidden_layers=0`` is a linear model).
    dropout : float
        Dropout after each hidden layer.
    weight_decay, lr : float
        AdamW's decoupled weight decay and learning rate.
    batch_size, max_epochs, patience : int
        Mini-batch size; at most ``max_epochs`` epochs; stop after ``patience`` epochs without
        a better validation loss and restore the best weights.
    valid_fraction : float
        When ``fit`` gets no ``eval_set``, this share of the training rows (seeded) is held out
        for early stopping; 0 trains for ``max_epochs`` without early stopping.
    n_threads : int
        torch threads during ``fit`` (determinism is per thread count).
    warm_start : bool
        Continue from the fitted weights and scalings (fine-tuning) instead of starting anew.
    seed : int
        Seeds initialization, dropout, batch order and the held-out split.

    Attributes
    ----------
    net_ : torch.nn.Sequential
        The trained network on standardized inputs (logits, or the standardized target).
    n_features_ : int
        Number of input features.
    x_mean_, x_scale_ : numpy.ndarray
        Input standardization learned on the training rows.
    y_mean_, y_std_ : float
        Target standardization (regression; 0 and 1 otherwise).
    best_epoch_, n_epochs_ : int
        The epoch whose weights were kept, and how many epochs ran.
    best_score_ : float or None
        The validation loss of the kept weights (see :meth:`fit`).
    stop_reason_ : str
        ``"early_stopping"``, ``"timeout"``, ``"max_epochs"`` or ``"no_improvement"``.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``.
    fit_info_ : dict
        ``n_epochs``, ``best_epoch``, ``best_valid_loss``, ``stopped_by`` (for reports).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); y = (X[:, 0] > 0).astype(int)
    >>> est = MLPEstimator("binary", 2, width=16, max_epochs=5, seed=0).fit(X, y)
    >>> est.predict_proba(X).shape
    (200, 2)
    """

    def __init__(self, task: str = "binary", n_classes: int = 2, *, hidden_layers: int = 2, width: int = 256,
                 dropout: float = 0.1, weight_decay: float = 1e-4, lr: float = 1e-3, batch_size: int = 256,
                 max_epochs: int = 200, patience: int = 12, valid_fraction: float = 0.1,
                 n_threads: int = 1, warm_start: bool = False, seed: int = 0):
        self.task = task
        self.n_classes = n_classes
        self.hidden_layers = hidden_layers
        self.width = width
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.valid_fraction = valid_fraction
        self.n_threads = n_threads
        self.warm_start = warm_start
        self.seed = seed

    # -- parameters -------------------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn convention)."""
        return {"task": self.task, "n_classes": self.n_classes, "seed": self.seed,
                **{name: getattr(self, name) for name in PARAMS}}

    def set_params(self, **params: Any) -> "MLPEstimator":
        """Set constructor parameters (scikit-learn convention)."""
        for key, value in params.items():
            if key not in self.get_params():
                raise UsageError(f"unknown mlp parameter {key!r}", f"valid: {', '.join(sorted(PARAMS))}")
            setattr(self, key, value)
        return self

    def _check_params(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r} for the mlp family", f"use one of: {', '.join(TASKS)}")
        if self.task != "regression" and (not isinstance(self.n_classes, int) or self.n_classes < 2):
            raise InputError(f"the mlp family needs at least 2 classes, got {self.n_classes}")
        for name, (_, check, meaning) in PARAMS.items():
            value = getattr(self, name)
            if not check(value):
                raise UsageError(f"invalid mlp parameter {name}={value!r}: must be {meaning}")

    # -- data -------------------------------------------------------------------------------

    def _features(self, X: Any, fitted: bool) -> Any:
        import numpy as np

        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise InputError(f"the mlp family needs a 2-d feature matrix, got {X.ndim} dimension(s)")
        if fitted and X.shape[1] != self.n_features_:
            raise InputError(f"the model expects {self.n_features_} features, got {X.shape[1]}")
        if not np.isfinite(X).all():
            raise InputError("the mlp family needs finite features (NaN or inf found)",
                             "featurize with the mlp preset, which imputes missing values")
        return X

    def _target(self, y: Any, n: int) -> Any:
        import numpy as np

        y = np.asarray(y)
        if y.shape != (n,):
            raise InputError(f"target has shape {y.shape}, expected ({n},)")
        if self.task == "regression":
            y = y.astype(np.float64)
            if not np.isfinite(y).all():
                raise InputError("the regression target holds NaN or inf")
            return y
        codes = y.astype(np.int64)
        if not np.array_equal(codes, y) or codes.min(initial=0) < 0 or codes.max(initial=0) >= self.n_classes:
            raise InputError(f"class codes must be integers in [0, {self.n_classes - 1}]")
        return codes

    def _weights(self, y: Any, sample_weight: Any) -> Any:
        import numpy as np

        # Class weights arrive folded into the sample weights (models/train.py: --class-weight).
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (len(y),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise InputError("sample weights must be finite, non-negative, not all zero, one per row")
        # Mean weight 1 keeps the loss scale, hence the learning rate, independent of the weights.
        return w / w.mean()

    def _split(self, X: Any, y: Any, w: Any, eval_set: Any) -> tuple[Any, ...]:
        import numpy as np

        if eval_set is not None:
            if isinstance(eval_set, list):
                if len(eval_set) != 1:
                    raise UsageError("the mlp family early-stops on exactly one validation set")
                eval_set = eval_set[0]
            Xv, yv, *rest = eval_set
            Xv = self._features(Xv, fitted=False)
            if Xv.shape[1] != X.shape[1]:
                raise InputError(f"validation rows have {Xv.shape[1]} features, training rows {X.shape[1]}")
            yv = self._target(yv, len(Xv))
            wv = self._weights(yv, rest[0] if rest else None)
            return X, y, w, Xv, yv, wv
        n_valid = int(round(len(X) * self.valid_fraction))
        if n_valid < 1 or len(X) - n_valid < 1:
            return X, y, w, None, None, None
        order = np.random.default_rng(self.seed).permutation(len(X))
        va, tr = order[:n_valid], order[n_valid:]
        return X[tr], y[tr], w[tr], X[va], y[va], w[va]

    # -- training ---------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None, timeout: float | None = None,
            progress: Any = None, callback: Callable[[int, float], None] | None = None) -> "MLPEstimator":
        """Train, early-stopping on the validation loss and keeping the best weights.

        Parameters
        ----------
        X : array-like of shape (n, k)
            Finite float features.
        y : array-like of shape (n,)
            Class codes ``0 .. n_classes - 1`` or regression values.
        sample_weight : array-like of shape (n,), optional
        eval_set : (X_valid, y_valid[, w_valid]) or a one-element list of it, optional
            Early-stopping data; without it ``valid_fraction`` of the rows is held out.
        timeout : float, optional
            Seconds; checked between mini-batches, so training stops within one batch of it
            and keeps the best weights seen so far (at least one batch always runs).
        progress : object, optional
            ``update(completed=, total=, description=)`` is called after every epoch.
        callback : callable, optional
            ``callback(epoch, valid_loss)`` after every epoch with validation data, where
            ``valid_loss`` is the weighted log loss (classification) or RMSE in target units
            (regression), lower is better. An exception it raises (such as
            ``optuna.TrialPruned``) stops training and propagates: that is the pruning hook.

        Returns
        -------
        self
        """
        torch = _torch()
        self._check_params()
        started = time.monotonic()
        run = _Run(None if timeout is None else started + float(timeout), progress, callback)
        train, valid, resume = self._prepare(X, y, sample_weight, eval_set)
        self._inference = None

        prev_threads = torch.get_num_threads()
        prev_deterministic = torch.are_deterministic_algorithms_enabled()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            torch.set_num_threads(self.n_threads)
            torch.use_deterministic_algorithms(True)
            try:
                if not resume:
                    n_out = 1 if self.task == "regression" else self.n_classes
                    self.net_ = _build_net(train[0].shape[1], n_out, self.hidden_layers, self.width, self.dropout)
                self._train(train, valid, run)
            finally:
                torch.set_num_threads(prev_threads)
                torch.use_deterministic_algorithms(prev_deterministic)
        self.fit_seconds_ = time.monotonic() - started
        return self

    def _prepare(self, X: Any, y: Any, sample_weight: Any, eval_set: Any) -> tuple[tuple[Any, ...], tuple[Any, ...] | None, bool]:
        """The checked training and validation arrays ``(X, y, w)`` (validation None: none held out)
        and whether the fit continues the fitted network (``warm_start``); the input and target
        scalings are fitted on the training rows unless it does."""
        X = self._features(X, fitted=False)
        y = self._target(y, len(X))
        if len(X) == 0:
            raise InputError("no training rows")
        w = self._weights(y, sample_weight)
        X, y, w, Xv, yv, wv = self._split(X, y, w, eval_set)
        resume = self.warm_start and hasattr(self, "net_")
        if resume and X.shape[1] != self.n_features_:
            raise InputError(f"warm start: the model has {self.n_features_} features, the data {X.shape[1]}")
        if not resume:
            self._fit_scalings(X, y)
        elif getattr(self, "x_lo_", None) is not None:
            import numpy as np

            # New rows widen the clamp range; the standardization stays the one the weights know.
            self.x_lo_, self.x_hi_ = np.minimum(self.x_lo_, X.min(axis=0)), np.maximum(self.x_hi_, X.max(axis=0))
        return (X, y, w), (None if Xv is None else (Xv, yv, wv)), resume

    def _fit_scalings(self, X: Any, y: Any) -> None:
        import numpy as np

        self.n_features_ = X.shape[1]
        self.x_mean_ = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        # Constant columns keep scale 1: dividing by ~0 would blow up unseen values at predict time.
        self.x_scale_ = np.where(std > 1e-12, std, 1.0)
        # Inputs are clamped to the training range (validation rows during early stopping too, and
        # every prediction), as trees do implicitly. A ReLU network extrapolates linearly and
        # without bound: on a time-ordered validation set (dates, tenures, counts beyond anything
        # seen) that made the default MLP score worse than chance on the churn sample.
        self.x_lo_ = X.min(axis=0).astype(np.float64) if len(X) else np.zeros(X.shape[1])
        self.x_hi_ = X.max(axis=0).astype(np.float64) if len(X) else np.zeros(X.shape[1])
        if self.task == "regression":
            self.y_mean_, std_y = float(y.mean()), float(y.std())
            self.y_std_ = std_y if std_y > 1e-12 else 1.0
        else:
            self.y_mean_, self.y_std_ = 0.0, 1.0

    def _tensors(self, X: Any, y: Any, w: Any) -> tuple[Any, Any, Any]:
        import numpy as np

        torch = _torch()
        if getattr(self, "x_lo_", None) is not None:
            X = np.clip(X, self.x_lo_, self.x_hi_)
        Xs = torch.from_numpy(((X - self.x_mean_) / self.x_scale_).astype(np.float32))
        if self.task == "regression":
            ys = torch.from_numpy(((y - self.y_mean_) / self.y_std_).astype(np.float32))
        else:
            ys = torch.from_numpy(y)
        return Xs, ys, torch.from_numpy(w.astype(np.float32))

    def _losses(self, out: Any, y: Any) -> Any:
        torch = _torch()
        if self.task == "regression":
            return (out[:, 0] - y) ** 2
        return torch.nn.functional.cross_entropy(out, y, reduction="none")

    def _valid_loss(self, X: Any, y: Any, w: Any) -> float:
        torch = _torch()
        self.net_.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(X), PREDICT_BATCH):
                sl = slice(start, start + PREDICT_BATCH)
                total += float((self._losses(self.net_(X[sl]), y[sl]) * w[sl]).sum())
        loss = total / float(w.sum())
        # Report the metric in the user's units: RMSE of the target, log loss of the classes.
        return math.sqrt(loss) * self.y_std_ if self.task == "regression" else loss

    def _train(self, train: tuple[Any, ...], valid: tuple[Any, ...] | None, run: "_Run") -> None:
        """Epochs of mini-batch AdamW on ``train`` ``(X, y, w)``, early-stopped on ``valid``; keeps the
        best weights and records ``history_``, ``stop_reason_``, ``n_epochs_``, ``best_epoch_``."""
        torch = _torch()
        data = self._tensors(*train)
        held_out = None if valid is None else self._tensors(*valid)
        optimizer = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        order = torch.Generator().manual_seed(self.seed)
        best_state, best_loss, best_epoch, waited = None, math.inf, 0, 0
        self.history_: list[dict[str, Any]] = []
        self.stop_reason_ = "max_epochs"
        if run.progress is not None:
            run.progress.update(completed=0, total=self.max_epochs, description="mlp: training")
        epoch = 0
        for epoch in range(1, self.max_epochs + 1):
            train_loss, timed_out = self._epoch(data, optimizer, order, run.deadline)
            record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "valid_loss": None}
            if held_out is not None:
                record["valid_loss"] = self._valid_loss(*held_out)
                if record["valid_loss"] < best_loss:
                    best_loss, best_epoch, waited = record["valid_loss"], epoch, 0
                    best_state = copy.deepcopy(self.net_.state_dict())
                else:
                    waited += 1
            self.history_.append(record)
            run.report(record, self.max_epochs)
            if timed_out:
                self.stop_reason_ = "timeout"
                break
            if held_out is not None and waited >= self.patience:
                self.stop_reason_ = "early_stopping"
                break
        self.n_epochs_ = epoch
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        elif held_out is not None:  # the loss was never finite: keep the last weights, say so
            self.stop_reason_ = "no_improvement"
        self.best_epoch_ = best_epoch if best_state is not None else epoch
        self.best_score_ = best_loss if best_state is not None else None
        self.net_.eval()

    def _epoch(self, data: tuple[Any, Any, Any], optimizer: Any, order: Any, deadline: float | None) -> tuple[float, bool]:
        """One pass over the shuffled training tensors: the weighted mean training loss, and whether
        the deadline stopped it (checked after every batch)."""
        torch = _torch()
        Xt, yt, wt = data
        batch = min(self.batch_size, len(Xt))
        self.net_.train()
        perm = torch.randperm(len(Xt), generator=order)
        seen, total = 0.0, 0.0
        for start in range(0, len(Xt), batch):
            idx = perm[start:start + batch]
            # A last batch of one row would make the gradient noisy for nothing: fold it in.
            if len(Xt) - start - batch == 1:
                idx = perm[start:]
            elif start and len(idx) == 1:
                break
            wb = wt[idx]
            loss = (self._losses(self.net_(Xt[idx]), yt[idx]) * wb).sum() / wb.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += float(wb.sum())
            total += float(loss.detach()) * float(wb.sum())
            if deadline is not None and time.monotonic() >= deadline:
                return total / max(seen, 1e-12), True
        return total / max(seen, 1e-12), False

    # -- inference --------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise InputError("this mlp model is not fitted")

    @property
    def fit_info_(self) -> dict[str, Any]:
        """The training summary train reports and the manifest keeps (the family-wide keys)."""
        self._check_fitted()
        stopped = self.stop_reason_ if self.stop_reason_ in ("timeout", "early_stopping") else None
        return {"n_epochs": self.n_epochs_, "best_epoch": self.best_epoch_, "best_valid_loss": self.best_score_,
                "stopped_by": stopped}

    @property
    def torch_output_(self) -> str:
        """What :meth:`to_torch_module` returns, for exporters: ``probabilities`` or ``values``."""
        return "values" if self.task == "regression" else "probabilities"

    def to_torch_module(self) -> Any:
        """An eval-mode ``torch.nn.Sequential`` from raw float features to the outputs.

        The input standardization is folded into the first linear layer and the target
        standardization into the last, so the module holds only standard layers after a clamp of
        each input to its training range (it exports to ONNX as Max/Min then plain
        Gemm/Relu/Softmax nodes). Its output is the class probabilities
        ``[N, n_classes]`` (softmax) or the prediction ``[N, 1]``.
        """
        torch = _torch()
        self._check_fitted()
        net = copy.deepcopy(self.net_).eval()
        linears = _linear_layers(net)
        with torch.no_grad():
            first, last = linears[0], linears[-1]
            # W((x - m) / s) + b = (W / s) x + (b - (W / s) m), computed in float64 then rounded once.
            W = first.weight.double().numpy() / self.x_scale_[None, :]
            first.bias.copy_(torch.from_numpy(first.bias.double().numpy() - W @ self.x_mean_))
            first.weight.copy_(torch.from_numpy(W))
            if self.task == "regression":
                last.weight.mul_(self.y_std_)
                last.bias.copy_(torch.from_numpy(last.bias.double().numpy() * self.y_std_ + self.y_mean_))
        layers = list(net)
        if getattr(self, "x_lo_", None) is not None:
            layers.insert(0, _clamp_module(self.x_lo_, self.x_hi_))
        if self.task != "regression":
            layers.append(torch.nn.Softmax(dim=1))
        module = torch.nn.Sequential(*layers).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module

    def _outputs(self, X: Any) -> Any:
        import numpy as np

        torch = _torch()
        self._check_fitted()
        X = self._features(X, fitted=True)
        if getattr(self, "_inference", None) is None:
            self._inference = self.to_torch_module()
        parts = []
        with torch.inference_mode():
            for start in range(0, len(X), PREDICT_BATCH):
                parts.append(self._inference(torch.from_numpy(X[start:start + PREDICT_BATCH])).numpy())
        n_out = 1 if self.task == "regression" else self.n_classes
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, n_out))

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape ``(n, n_classes)`` (classification only)."""
        if self.task == "regression":
            raise UsageError("predict_proba is for classification; this is a regression model")
        proba = self._outputs(X)
        # The float32 softmax sums to 1 within 1e-7; consumers of float64 probabilities expect 1.
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> Any:
        """Class codes (classification) or values (regression), shape ``(n,)``."""
        out = self._outputs(X)
        return out[:, 0] if self.task == "regression" else out.argmax(axis=1)

    # -- persistence ------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-safe data."""
        self._check_fitted()
        return {
            "format": CONFIG_FORMAT,
            "params": self.get_params(),
            "n_features": int(self.n_features_),
            "x_mean": [float(v) for v in self.x_mean_],
            "x_scale": [float(v) for v in self.x_scale_],
            **({"x_range": [[float(v) for v in self.x_lo_], [float(v) for v in self.x_hi_]]}
               if getattr(self, "x_lo_", None) is not None else {}),
            "y_mean": float(self.y_mean_),
            "y_std": float(self.y_std_),
            "best_epoch": int(self.best_epoch_),
            "n_epochs": int(self.n_epochs_),
            "best_score": self.best_score_,
            "stop_reason": self.stop_reason_,
            "history": self.history_,
        }

    def weights_bytes(self) -> bytes:
        """The network weights as safetensors bytes (deterministic)."""
        import safetensors.torch

        self._check_fitted()
        _torch()
        return safetensors.torch.save({k: v.contiguous() for k, v in self.net_.state_dict().items()})

    @classmethod
    def from_parts(cls, config: dict[str, Any], weights: bytes) -> "MLPEstimator":
        """Rebuild a fitted estimator from :meth:`config` and :meth:`weights_bytes`."""
        import numpy as np
        import safetensors
        from safetensors.torch import load as load_safetensors  # tensors only, never pickle

        _torch()
        if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
            raise InputError(f"unsupported mlp config format {config.get('format') if isinstance(config, dict) else None!r}")
        try:
            params = dict(config["params"])
            est = cls(params.pop("task"), params.pop("n_classes"), **params)
            est._check_params()
            n_out = 1 if est.task == "regression" else est.n_classes
            est.net_ = _build_net(int(config["n_features"]), n_out, est.hidden_layers, est.width, est.dropout)
            est.net_.load_state_dict(load_safetensors(weights), strict=True)
            est.n_features_ = int(config["n_features"])
            est.x_mean_ = np.asarray(config["x_mean"], dtype=np.float64)
            est.x_scale_ = np.asarray(config["x_scale"], dtype=np.float64)
            if est.x_mean_.shape != (est.n_features_,) or est.x_scale_.shape != (est.n_features_,):
                raise ValueError("input scaling does not match the number of features")
            # Bundles written before inputs were clamped have no range: they predict as before.
            lo, hi = (np.asarray(v, dtype=np.float64) for v in config.get("x_range", [None, None]))
            est.x_lo_, est.x_hi_ = (None, None) if lo.ndim == 0 else (lo, hi)
            if est.x_lo_ is not None and (lo.shape != (est.n_features_,) or hi.shape != (est.n_features_,)):
                raise ValueError("input range does not match the number of features")
            est.y_mean_, est.y_std_ = float(config["y_mean"]), float(config["y_std"])
            est.best_epoch_, est.n_epochs_ = int(config["best_epoch"]), int(config["n_epochs"])
            est.best_score_, est.stop_reason_ = config["best_score"], config["stop_reason"]
            est.history_ = list(config["history"])
        except (KeyError, TypeError, ValueError, RuntimeError, safetensors.SafetensorError) as exc:
            raise InputError(f"invalid mlp model in the bundle ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
        est.net_.eval()
        est._inference = None
        return est


class MLPFamily(Family):
    """The ``mlp`` entry of the family registry (see ARCHITECTURE.md, "Model families")."""

    name = NAME
    libraries = (*Family.libraries, "torch")
    thread_param = "n_threads"

    def default_params(self, task: str) -> dict[str, Any]:
        """Defaults that work on small and large tables alike (early stopping sets the epochs)."""
        return {name: default for name, (default, _, _) in PARAMS.items()}

    def make(self, task: str, n_classes: int, params: Mapping[str, Any] | None, seed: int) -> MLPEstimator:
        """An unfitted estimator; fails early (exit 3) when torch is not installed."""
        _torch()
        est = MLPEstimator(task, n_classes, seed=seed, **self.resolve_params(task, params))
        est._check_params()
        return est

    def search_space(self, trial: Any, task: str) -> dict[str, Any]:
        """Optuna suggestions for tuning (epochs are left to early stopping)."""
        return {
            "hidden_layers": trial.suggest_int("hidden_layers", 1, 4),
            "width": trial.suggest_categorical("width", [32, 64, 128, 256, 512]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256, 512, 1024]),
        }

    def warm_start(self, est: MLPEstimator, init: MLPEstimator) -> tuple[MLPEstimator, str | None]:
        """Fine-tune: a copy of the champion's network (and its input scalings) keeps training."""
        tuned = copy.deepcopy(init)
        tuned.set_params(**{k: v for k, v in est.get_params().items() if k not in ("task", "n_classes", "warm_start")},
                         warm_start=True)
        return tuned, f"fine-tuned the champion's network (best epoch {init.best_epoch_})"

    def save(self, est: MLPEstimator, writer: Any, prefix: str) -> None:
        """Add the weights (safetensors) and config (JSON) under ``prefix``."""
        writer.add_bytes(prefix + WEIGHTS_MEMBER, est.weights_bytes())
        writer.add_json(prefix + CONFIG_MEMBER, est.config())

    def load(self, reader: Any, prefix: str, spec: Mapping[str, Any] | None = None) -> MLPEstimator:
        """Read a model written by :meth:`save`; never unpickles (safetensors + JSON)."""
        return MLPEstimator.from_parts(reader.json(prefix + CONFIG_MEMBER), reader.bytes(prefix + WEIGHTS_MEMBER))

    def _raw_importances(self, est: MLPEstimator) -> Any:
        """A cheap proxy, not permutation importance: the L2 norm of each input's first-layer weights.

        Inputs are standardized inside the network, so the norms are comparable across features
        (:meth:`importances` scales them to sum to 1). They ignore what deeper layers do with each
        input; ``evaluate``'s permutation importance is the faithful ranking.
        """
        import numpy as np

        est._check_fitted()
        weight = _linear_layers(est.net_)[0].weight.detach().double().numpy()
        return np.sqrt((weight ** 2).sum(axis=0))

    def to_onnx(self, est: MLPEstimator, n_features: int, task: str, n_classes: int = 0) -> Any:
        """An ONNX graph from ``features`` [N, k] to ``probabilities`` [N, C] or ``prediction`` [N, 1]."""
        import io
        import warnings

        import onnx

        torch = _torch()
        module = est.to_torch_module()
        output = "prediction" if task == "regression" else "probabilities"
        buf = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated upstream, but the dynamo one needs onnxscript,
            # which is not a dependency; the legacy path is exact for these standard layers.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(2, n_features),), buf, input_names=["features"],
                              output_names=[output], dynamic_axes={"features": {0: "N"}, output: {0: "N"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        return onnx.load_from_string(buf.getvalue())


FAMILY = MLPFamily()
