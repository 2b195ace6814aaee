"""The one training loop with early stopping, shared by the estimator, the grid trainer and
fine-tuning.

The loop knows nothing of networks: it calls ``run_epoch`` to train, ``validate`` to score
every setting (S >= 1 at once: the grid trainer trains many), and ``keep`` to snapshot the
settings that just improved. A setting stops after ``patience`` epochs without a better
score; its best epoch's weights are what the caller restores. Scores are validation macro
AUCs; where no finding has both classes in validation (AUC undefined), the caller passes
the negative validation loss instead, so the best epoch is still a trained one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

MIN_DELTA = 1e-6


@dataclass
class LoopResult:
    best_epoch: list[int]
    best_score: list[float]
    history: list[list[dict]] = field(default_factory=list)
    epochs_run: int = 0
    n_iter: int = 0


def early_stopping_loop(*, n_settings: int, max_epochs: int, patience: int,
                        run_epoch: Callable[[int, np.ndarray], np.ndarray | float | None],
                        validate: Callable[[], np.ndarray] | None,
                        keep: Callable[[np.ndarray], None] | None = None,
                        should_stop: Callable[[], bool] | None = None,
                        progress: Callable[[int, dict], None] | None = None) -> LoopResult:
    """Train up to ``max_epochs``; with ``validate``, stop each setting after ``patience``
    epochs without improvement and call ``keep(mask)`` for the settings that improved.

    Parameters
    ----------
    run_epoch(epoch, active) -> train loss per setting (S,), a scalar, or None. ``active``
        (S,) bool: settings still training (others must not change).
    validate() -> (S,) scores, higher is better, NaN where undefined.
    keep(improved) : snapshot the weights of the settings where ``improved`` (S,) is True.
    should_stop() : an external stop (e.g. a step budget), checked after each epoch.
    progress(epoch, info) : called after each epoch.

    Without ``validate``, every setting trains ``max_epochs`` and best_epoch = epochs run.
    """
    S = n_settings
    best = np.full(S, -math.inf)
    best_epoch = [0] * S
    bad = np.zeros(S, dtype=int)
    active = np.ones(S, dtype=bool)
    history: list[list[dict]] = [[] for _ in range(S)]
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        loss = run_epoch(epoch, active.copy())
        losses = np.broadcast_to(np.asarray(np.nan if loss is None else loss, dtype=float), (S,))
        scores = validate() if validate is not None else None
        improved = np.zeros(S, dtype=bool)
        for s in np.flatnonzero(active):
            record = {"epoch": epoch}
            if not math.isnan(losses[s]):
                record["train_loss"] = float(losses[s])
            if scores is not None:
                score = float(scores[s])
                record["val_score"] = score
                if not math.isnan(score) and score > best[s] + MIN_DELTA:
                    best[s], best_epoch[s], bad[s] = score, epoch, 0
                    improved[s] = True
                else:
                    bad[s] += 1
                    if bad[s] >= patience:
                        active[s] = False
            history[s].append(record)
        if improved.any() and keep is not None:
            keep(improved)
        if progress is not None:
            progress(epoch, {"active": int(active.sum()), "settings": S,
                             "best": float(np.max(best)) if S else math.nan})
        if not active.any() or (should_stop is not None and should_stop()):
            break
    if validate is None:
        best_epoch = [epoch] * S
        best = np.full(S, math.nan)
    return LoopResult(best_epoch, [float(b) for b in best], history, epoch)
