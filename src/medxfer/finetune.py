"""Partial fine-tuning from images: the last N backbone blocks and the bottleneck head,
trained end to end.

Same network, loss and training loop as :class:`medxfer.head.BottleneckClassifier`
(medxfer.head provides them); the backbone's last ``unfreeze`` blocks get their own,
lower learning rate. Batch-norm statistics stay frozen (eval mode), which is what small
batches of radiographs need. Light augmentation suited to radiographs: small rotation and
scale, brightness and contrast; no horizontal flip by default (the heart is on the left).
Runs on the GPU when one is present (``device="auto"``); on a CPU it is for small data.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import asdict, replace

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .backbones import create_backbone, state_sha256
from .data import Dataset
from .errors import DataError
from .head import (BottleneckClassifier, BottleneckNet, HeadLoss, early_stopping_loop,
                   predict_proba_nets, task_macro_auc)
from .engine import decode_workers, process_gpu, resolve_device, torch_forward
from .features import ImageRows
from .model_io import TrainedModel, package
from .settings import FinetuneSettings, HeadSettings, PackageSettings, head_params
from .splits import patient_holdout

log = logging.getLogger(__name__)


def _distributed(dev) -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, starting the process group (NCCL on
    GPUs, Gloo on CPUs) when there are several processes; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


class _Joint(torch.nn.Module):
    """Backbone and head as one module: what DistributedDataParallel wraps."""

    def __init__(self, bb, net):
        super().__init__()
        self.bb, self.net = bb, net

    def forward(self, x):
        return self.net(self.bb(x))


class _Images(TorchDataset):
    """Training images; the augmentation of item i in an epoch depends on (seed, epoch, i)
    only, so the number of decoding workers and of processes never changes the result."""

    def __init__(self, paths, labels, preprocessing, augment: bool, hflip: bool, image_cache=None,
                 seed: int = 0, epoch: int = 0):
        self.paths, self.labels, self.pp = list(paths), labels, preprocessing
        self.seed, self.epoch = seed, epoch
        self.rows = ImageRows(self.paths, preprocessing, image_cache)  # decode, through the cache
        ops = [v2.RandomAffine(degrees=5, scale=(0.95, 1.05), translate=(0.03, 0.03)),
               v2.ColorJitter(brightness=0.1, contrast=0.1)]
        if hflip:
            ops.append(v2.RandomHorizontalFlip())
        self.aug = v2.Compose(ops) if augment else None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        gray = torch.from_numpy(self.rows.resized(self.paths[i]).copy()).unsqueeze(0)
        if self.aug is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + self.epoch * 100_003 + i) % 2**63)
                gray = self.aug(gray).clamp(0, 1)
        x = self.pp.to_tensor(gray[0].numpy())
        return x, torch.from_numpy(self.labels[i])


def finetune(dataset: Dataset, *, settings: FinetuneSettings = FinetuneSettings(),
             head: HeadSettings | dict | None = None,
             packaging: PackageSettings = PackageSettings(), seed: int = 0,
             progress: bool = True) -> TrainedModel:
    """Fine-tune the last ``settings.unfreeze`` blocks with the bottleneck head on images.

    A patient-wise share (``head.validation_fraction``) of ``dataset`` is held out for early
    stopping on macro AUC, calibration and thresholds. ``settings.max_steps`` stops after
    that many optimizer steps (tests). Returns a TrainedModel whose folder also stores the
    fine-tuned backbone weights.
    """
    if dataset.task != "multilabel":
        raise DataError("fine-tuning supports multi-label data for now; use `medxfer train` "
                        "on features for single-label folders")
    st = settings
    dev = resolve_device(st.device)
    rank, world = _distributed(dev)
    if dev.type == "cuda" and world > 1:
        dev = process_gpu()
    num_workers = st.workers
    if num_workers is None:  # on the CPU the cores are torch's
        num_workers = min(8, decode_workers(dev)) if dev.type == "cuda" else 0
    if st.batch_size % world:
        raise DataError(f"--batch-size {st.batch_size} must divide by the {world} processes "
                        "(each takes an equal share of every global batch)")
    # Fine-tuning is minibatch AdamW through the backbone; its epochs, patience and batch
    # size are FinetuneSettings', so the record says so.
    p = head_params(head) | {"random_state": seed, "device": str(dev), "solver": "adamw",
                             "max_epochs": st.epochs, "patience": st.patience,
                             "batch_size": st.batch_size}
    BottleneckClassifier(**p).validate_params()
    tr, va = patient_holdout(dataset.patient_ids, p["validation_fraction"], Y=dataset.labels, seed=seed)
    bb = create_backbone(st.backbone)
    if bb.config.members:
        raise DataError(f"'{st.backbone}' concatenates backbones for frozen features; fine-tune "
                        f"one network (e.g. --backbone {bb.config.members[0]})")
    pp = bb.preprocessing
    Y = dataset.labels.astype(np.float32)
    paths = dataset.table["path"].tolist()

    def loader(idx, aug, shuffle, gen=None, epoch=0):
        images = _Images([paths[i] for i in idx], Y[idx], pp, aug, st.hflip, st.image_cache,
                         seed=seed, epoch=epoch)
        if not shuffle:
            return DataLoader(images, batch_size=st.batch_size, shuffle=False, num_workers=num_workers)
        # One global permutation per epoch (the same in every process); each global batch of
        # batch_size rows is split in equal contiguous shares, one per process. With one
        # process this is an ordinary shuffled loader; with N, DistributedDataParallel's
        # gradient average over the shares equals the one-process gradient of the batch.
        order = torch.randperm(len(idx), generator=gen).tolist()
        share = st.batch_size // world
        batches = [order[i:i + st.batch_size][rank * share:(rank + 1) * share]
                   for i in range(0, len(order), st.batch_size)]
        return DataLoader(images, batch_sampler=[b for b in batches if b], num_workers=num_workers,
                          pin_memory=dev.type == "cuda")

    def features(idx) -> np.ndarray:
        # extraction's forward pass (TF32 off on GPUs, channels-last): calibration and
        # thresholds are fitted on features computed as `predict` will compute them
        bb.eval()
        forward = torch_forward(bb, dev)
        return np.concatenate([forward(x) for x, _ in loader(idx, False, False)])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bb.to(dev)
        z = features(tr)  # frozen features of the training part fix the standardization
        net = BottleneckNet(z.shape[1], p["bottleneck_dim"], Y.shape[1]).standardize_like(z).to(dev)
        bb_params = bb.unfreeze_last(st.unfreeze)
        opt = torch.optim.AdamW([{"params": net.parameters(), "lr": p["lr"]},
                                 {"params": bb_params, "lr": st.lr_backbone}],
                                weight_decay=p["weight_decay"])
        est = BottleneckClassifier(**p)
        loss_fn = HeadLoss(est, "multilabel", Y[tr], Y.shape[1], dev)
        joint = _Joint(bb, net)
        model = joint
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(joint, device_ids=[dev.index] if dev.type == "cuda" else None)
        gen = torch.Generator().manual_seed(seed)
        steps = [0]
        clock = [0.0, 0]  # seconds in training epochs, images trained on (all processes)
        best_state: list = [None]

        def run_epoch(epoch, active):
            bb.eval()  # frozen BN statistics; gradients still flow into the open blocks
            net.train()
            total, seen = 0.0, 0
            t0 = time.perf_counter()
            for x, y in tqdm(loader(tr, st.augment, True, gen, epoch), desc=f"finetune epoch {epoch}",
                             disable=not progress, leave=False):
                loss = loss_fn.total(*model(x.to(dev)), y.to(dev), net)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
                seen += len(x)
                steps[0] += 1
                if st.max_steps and steps[0] >= st.max_steps:
                    break
            clock[0] += time.perf_counter() - t0
            clock[1] += seen * world
            return total / max(seen, 1)

        def validate():
            score = task_macro_auc(Y[va], predict_proba_nets([net], features(va), "multilabel"),
                                   "multilabel")
            log.info("fine-tune: validation macro AUC %.3f", score)
            return np.array([score])

        def keep(improved):
            best_state[0] = (copy.deepcopy(net.state_dict()), copy.deepcopy(bb.state_dict()))

        res = early_stopping_loop(
            n_settings=1, max_epochs=st.epochs, patience=st.patience, run_epoch=run_epoch,
            validate=validate, keep=keep,
            should_stop=lambda: bool(st.max_steps and steps[0] >= st.max_steps))
        if best_state[0] is not None:
            net.load_state_dict(best_state[0][0])
            bb.load_state_dict(best_state[0][1])
        bb.requires_grad_(False)
        bb.eval()
        Xv = features(va)
    net.cpu()
    bb.cpu()
    est = BottleneckClassifier.from_nets(p | {"device": "cpu"}, [net], task="multilabel",
                                         best_epoch=res.best_epoch[0], best_score=res.best_score[0],
                                         history=res.history[0])
    Pv = est.predict_proba(Xv)
    est.validation_ = (Xv, Y[va], Pv)
    state = {k: v.detach().cpu().contiguous() for k, v in bb.state_dict().items()}
    identity = replace(bb.identity(), finetuned_sha256=state_sha256(state)).as_dict()
    best = res.best_score[0]
    return package(est, dataset.label_names, Y[va], Pv, backbone=identity,
                   features={"dataset_name": dataset.name, "n_rows": len(dataset),
                             "dataset_fingerprint": dataset.fingerprint()},
                   settings=packaging,
                   metrics={"fine_tune_validation_macro_auc": None if math.isinf(best) else best,
                            "steps": steps[0],
                            # decode, augmentation and the optimizer steps, not validation
                            "train_images_per_s": round(clock[1] / clock[0], 1) if clock[0] else None},
                   config={"params": p, "finetune": asdict(st) | {"device": str(dev)}},
                   backbone_state=state, training_patients=dataset.patient_ids,
                   dataset=dataset, validation_index=va,
                   validation_what="predictions of the validation part (patients held out from "
                                   "fine-tuning, used for early stopping, calibration and thresholds)")
