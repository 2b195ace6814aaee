"""The head: the paper's bottleneck model over cached features.

    net.py        BottleneckNet (standardization, W, V, b) and device handling
    losses.py     L_ce, L_reg, the weight penalty, and the imbalance strategies table
    training.py   the one early-stopping loop (estimator, grid trainer, fine-tuning)
    estimator.py  BottleneckClassifier, the scikit-learn estimator; to_state/from_state
    grid.py       fit_grid: many settings trained in one pass
    selection.py  BottleneckCV: penalties by inner patient-wise CV, fold models averaged
"""

from .estimator import BottleneckClassifier, task_macro_auc
from .grid import fit_grid
from .losses import IMBALANCE, HeadLoss
from ..engine import resolve_device
from .net import BottleneckNet, predict_proba_nets
from .selection import DEFAULT_CV_GRID, BottleneckCV
from .training import early_stopping_loop

__all__ = ["BottleneckCV", "DEFAULT_CV_GRID", "BottleneckClassifier", "BottleneckNet", "HeadLoss", "IMBALANCE", "early_stopping_loop",
           "fit_grid", "predict_proba_nets", "resolve_device", "task_macro_auc"]
