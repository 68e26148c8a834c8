"""mlp-digits: a small neural network trained by SGD with momentum on scikit-learn's digits.

A real training run in the task-file form (SPACE, evaluate, NAME, DESCRIPTION, DIRECTION),
so the tuners meet an objective that is noisy across seeds, cheap, and needs no download:
scikit-learn's `MLPClassifier` (one hidden layer of 32 ReLU units, solver "sgd", constant
learning rate, batch 64, L2 alpha 1e-4) for exactly `EPOCHS` epochs on the bundled 8x8 digits
(1797 images, 10 classes). The seed fixes the stratified 75/25 train/validation split, the
weight initialisation and the batch order; features are standardised with statistics of the
train part only, so the validation part stays unseen.

The value (minimised) is the validation log-loss, `sklearn.metrics.log_loss` on
`predict_proba`: ln 10 ~ 2.30 is the uniform guess, good settings reach 0.05-0.15. It scores
confidence as well as correctness, so it separates settings that accuracy ties. Metrics:
`accuracy` (validation), `train_loss` (the last epoch's mean training loss, L2 penalty
included: sklearn's `loss_`) and `epochs` (`n_iter_`, always `EPOCHS`: tol=0 and
n_iter_no_change=EPOCHS disable the early stop, so every setting pays the same cost).

Failure rule: a diverged training returns {"value": nan, "status": "failed", "error": why},
plus `train_loss` and `epochs` when the training got that far, and never raises. Diverged means
any of: sklearn raises about non-finite numbers or overflow (ArithmeticError, or a ValueError
naming NaN, infinity, non-finite or overflow); the training loss or a predicted probability is
not finite; or the final training loss is above both ln 10 (the uniform guess) and the first
epoch's loss, that is, training made the model worse than where it started and worse than
guessing. The last case is the common one: at lr 1.0 and momentum 0.99 sklearn raises nothing,
the weights grow to ~1e53 (finite) and `loss_` to ~1e101 while the validation log-loss, its
probabilities clipped, reads a harmless-looking 15 (accuracy 0.58). Both halves of the test
matter: a learning rate of 1e-4 learns so slowly that its training loss ends near 2.3-2.8,
above ln 10 but always below its first epoch's (the curve falls every epoch), so it is a poor
result, not a failure; and a run that learned and then blew up (final 1e4, best epoch 0.7) ends
above both. Parameters outside sklearn's own bounds (a negative learning rate) still raise:
that is a caller's error, not a divergence.

Cost, measured on a shared machine with 2 cores (one used: BLAS is held to one thread, so
parallel trials do not fight over cores): about 0.3 s per evaluation, the same at a sane
setting (lr 0.01, momentum 0.9) and a diverging one (lr 1.0, momentum 0.99); importing
scikit-learn adds about 1 s once per process. scikit-learn is imported inside `evaluate`, so
reading SPACE and NAME stays cheap and needs no scikit-learn.
"""

from __future__ import annotations

import math
import re
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

NAME = "mlp-digits"
DESCRIPTION = (
    "Trains a small neural network (scikit-learn MLPClassifier, one hidden layer of 32 units) with SGD with momentum "
    "for 40 epochs on the 8x8 handwritten digits; the value is the validation log-loss (lower is better, 2.30 is "
    "chance)."
)
DIRECTION = "minimize"
SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "nesterov": {"type": "categorical", "choices": [False, True]},
}

EPOCHS = 40  # fixed, so every evaluation costs the same and only the optimizer's settings differ
BATCH_SIZE = 64
HIDDEN = (32,)
UNIFORM_LOSS = math.log(10)  # log-loss of guessing 1/10 for every class
# How sklearn words a numerical blow-up ("Solver produced non-finite parameter weights", "Input contains NaN",
# "... contains infinity"); not a bare "inf", which its parameter errors print as a range bound: "(0.0, inf)".
_NUMERIC_ERROR = re.compile(r"\b(nan|infinity|non-finite|overflow)\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits (no download), read once per process; read-only, so no evaluation can alter another's."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    X, y = load_digits(return_X_y=True)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def _failed(error: str, **metrics: float) -> dict[str, Any]:
    """A failed trial; the training metrics known so far ride along, so a table still shows how far it blew up."""
    return {"value": float("nan"), "status": "failed", "error": error, **metrics}


def evaluate(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train once with `params` on the split `seed` picks; the validation log-loss and metrics, or a failure."""
    from sklearn.metrics import accuracy_score, log_loss  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    X, y = _digits()
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(X_train)  # train statistics only: the validation part stays unseen
    X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
    model = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        solver="sgd",
        learning_rate="constant",
        learning_rate_init=float(params["learning_rate"]),
        momentum=float(params["momentum"]),
        nesterovs_momentum=bool(params["nesterov"]),
        batch_size=BATCH_SIZE,
        max_iter=EPOCHS,
        tol=0.0,
        n_iter_no_change=EPOCHS,  # with tol=0: never stop early, always EPOCHS epochs
        early_stopping=False,
        random_state=seed,
    )
    # One BLAS thread: the net is too small to gain from more, and trials run side by side.
    # A diverging run overflows on purpose; its warnings (and the max_iter ConvergenceWarning) are noise here.
    with threadpool_limits(limits=1), warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            model.fit(X_train, y_train)
            proba = model.predict_proba(X_val)
        except ArithmeticError as e:
            return _failed(f"diverged: {type(e).__name__}: {e}")
        except ValueError as e:
            # sklearn's InvalidParameterError (a parameter out of its bounds) is a ValueError and a TypeError
            if isinstance(e, TypeError) or not _NUMERIC_ERROR.search(str(e)):
                raise  # not a numerical blow-up: the caller's error
            return _failed(f"diverged: {e}")
    train_loss, first_loss = float(model.loss_), float(model.loss_curve_[0])
    if not math.isfinite(train_loss):
        return _failed(f"diverged: training loss {train_loss} after {model.n_iter_} epochs", epochs=model.n_iter_)
    if train_loss > max(UNIFORM_LOSS, first_loss):  # worse than guessing and than the first epoch: blew up
        return _failed(f"diverged: training loss {train_loss:.3g} after {model.n_iter_} epochs, up from "
                       f"{first_loss:.3g} after the first (the uniform guess scores {UNIFORM_LOSS:.2f})",
                       train_loss=train_loss, epochs=model.n_iter_)
    if not np.isfinite(proba).all():
        return _failed("diverged: non-finite predicted probabilities", train_loss=train_loss, epochs=model.n_iter_)
    return {
        "value": float(log_loss(y_val, proba, labels=model.classes_)),
        "status": "ok",
        "accuracy": float(accuracy_score(y_val, model.classes_[np.argmax(proba, axis=1)])),
        "train_loss": train_loss,
        "epochs": int(model.n_iter_),
    }
