"""Partial fine-tuning from images: the last N backbone blocks and the bottleneck head,
trained end to end.

Same model and loss as :class:`medxfer.model.BottleneckClassifier` (it provides the head,
the imbalance weighting and L_reg); the backbone's last ``unfreeze`` blocks get their own,
lower learning rate. Batch-norm statistics stay frozen (eval mode), which is what small
batches of radiographs need. Light augmentation suited to radiographs: small rotation and
scale, brightness and contrast; no horizontal flip by default (the heart is on the left).
Runs on the GPU when one is present (``device="auto"``); on a CPU it is for small data.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .backbones import create_backbone
from .data import Dataset
from .errors import DataError
from .images import load_image
from .metrics import apply_calibration, choose_thresholds, fit_calibration
from .model import BottleneckClassifier, _macro_auc, _Net
from .model_io import TrainedModel
from .splits import patient_holdout

log = logging.getLogger(__name__)


class _Images(TorchDataset):
    def __init__(self, paths, labels, preprocessing, augment: bool, hflip: bool):
        self.paths, self.labels, self.pp = list(paths), labels, preprocessing
        ops = [v2.RandomAffine(degrees=5, scale=(0.95, 1.05), translate=(0.03, 0.03)),
               v2.ColorJitter(brightness=0.1, contrast=0.1)]
        if hflip:
            ops.append(v2.RandomHorizontalFlip())
        self.aug = v2.Compose(ops) if augment else None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        gray = torch.from_numpy(self.pp.resize(load_image(self.paths[i])).copy()).unsqueeze(0)
        if self.aug is not None:
            gray = self.aug(gray).clamp(0, 1)
        x = self.pp.to_tensor(gray[0].numpy())
        return x, torch.from_numpy(self.labels[i])


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def finetune(dataset: Dataset, *, backbone: str = "efficientnet_lite0", unfreeze: int = 2,
             params: dict | None = None, epochs: int = 10, patience: int = 3,
             lr_backbone: float = 1e-4, batch_size: int = 16, augment: bool = True,
             hflip: bool = False, max_steps: int | None = None, seed: int = 0,
             device: str = "auto", num_workers: int = 0, calibration: str = "platt",
             progress: bool = True) -> TrainedModel:
    """Fine-tune the last ``unfreeze`` blocks with the bottleneck head on images.

    A patient-wise 20% of ``dataset`` is held out for early stopping on macro AUC,
    calibration and thresholds. ``max_steps`` stops after that many optimizer steps (tests).
    Returns a TrainedModel whose folder also stores the fine-tuned backbone weights.
    """
    if dataset.task != "multilabel":
        raise DataError("fine-tuning supports multi-label data for now; use `medxfer train` "
                        "on features for single-label folders")
    from .pipeline import DEFAULT_PARAMS

    dev = _device(device)
    p = DEFAULT_PARAMS | dict(params or {}) | {"random_state": seed}
    est = BottleneckClassifier(**p)
    est._validate_params()
    est.task_ = "multilabel"
    tr, va = patient_holdout(dataset.patient_ids, 0.2, Y=dataset.labels, seed=seed)
    bb = create_backbone(backbone)
    pp = bb.preprocessing
    Y = dataset.labels.astype(np.float32)
    paths = dataset.table["path"].tolist()

    def loader(idx, aug, shuffle, gen=None):
        return DataLoader(_Images([paths[i] for i in idx], Y[idx], pp, aug, hflip),
                          batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                          generator=gen)

    def features(idx):
        out = []
        bb.eval()
        with torch.inference_mode():
            for x, _ in loader(idx, False, False):
                out.append(bb(x.to(dev)).cpu())
        return torch.cat(out)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bb.to(dev)
        z = features(tr)  # frozen features of the training part fix the standardization
        net = _Net(z.shape[1], p["bottleneck_dim"], Y.shape[1]).to(dev)
        net.mean.copy_(z.mean(0))
        net.scale.copy_(z.std(0) + 1e-6)
        bb_params = bb.unfreeze_last(unfreeze)
        opt = torch.optim.AdamW([{"params": net.parameters(), "lr": p["lr"]},
                                 {"params": bb_params, "lr": lr_backbone}],
                                weight_decay=p["weight_decay"])
        w = {k: torch.as_tensor(v, dtype=torch.float32, device=dev)
             for k, v in est._loss_weights(Y[tr]).items()}
        gen = torch.Generator().manual_seed(seed)
        best, best_state, bad, steps, best_epoch = -math.inf, None, 0, 0, 0
        history = []
        for epoch in range(1, epochs + 1):
            bb.eval()  # frozen BN statistics; gradients still flow into the open blocks
            net.train()
            total, seen = 0.0, 0
            for x, y in tqdm(loader(tr, augment, True, gen), desc=f"finetune epoch {epoch}",
                             disable=not progress, leave=False):
                logits, h = net(bb(x.to(dev)))
                loss = est._ce(logits, y.to(dev), w) + est._reg(h) + est._weight_penalty(net).to(dev)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
                seen += len(x)
                steps += 1
                if max_steps and steps >= max_steps:
                    break
            est.net_ = net.eval()
            Pv = est._proba(features(va).numpy())
            score = _macro_auc(Y[va], Pv, "multilabel")
            history.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_macro_auc": score})
            log.info("fine-tune epoch %d: loss %.4f, validation macro AUC %.3f", epoch,
                     total / max(seen, 1), score)
            if not math.isnan(score) and score > best + 1e-6 or best_state is None:
                best, bad, best_epoch = score, 0, epoch
                best_state = (copy.deepcopy(net.state_dict()), copy.deepcopy(bb.state_dict()))
            else:
                bad += 1
            if bad >= patience or (max_steps and steps >= max_steps):
                break
        net.load_state_dict(best_state[0])
        bb.load_state_dict(best_state[1])
        bb.requires_grad_(False)
        bb.eval()
        est.net_ = net.eval()
        Pv = est._proba(features(va).numpy())
    est.n_features_in_, est.n_outputs_ = int(z.shape[1]), int(Y.shape[1])
    est.best_epoch_, est.best_score_, est.history_ = best_epoch, best, history
    cal = fit_calibration(Y[va], Pv, calibration)
    thresholds = choose_thresholds(Y[va], apply_calibration(Pv, cal))
    net.cpu()
    bb.cpu()
    state = {k: v.detach().cpu().contiguous() for k, v in bb.state_dict().items()}
    identity = bb.identity() | {"finetuned_sha256": _state_sha256(state)}
    return TrainedModel(est, list(dataset.label_names), thresholds, identity,
                        features={"dataset_name": dataset.name, "n_rows": len(dataset),
                                  "dataset_fingerprint": dataset.fingerprint()},
                        metrics={"validation_macro_auc": None if math.isinf(best) else best,
                                 "best_epoch": best_epoch, "validation_images": int(len(va))},
                        config={"params": p, "finetune": {"unfreeze": unfreeze, "epochs": epochs,
                                                          "lr_backbone": lr_backbone,
                                                          "augment": augment, "hflip": hflip,
                                                          "device": str(dev), "steps": steps}},
                        calibration=cal, backbone_state=state)


def _state_sha256(state: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].numpy().tobytes())
    return h.hexdigest()
