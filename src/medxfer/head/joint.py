"""Several full-batch (L-BFGS) settings of the bottleneck model, one pass over the features
per step for all of them.

At ChestX-ray14's full size a full-batch step is bound by reading the n x d features and by
skinny matrix products (8 columns run at a sixth of the speed of 150 on these 2 cores;
docs/full_scale.md), not by arithmetic. Settings that share their training rows can share
that pass: their first products are one, z @ [W_1 ... W_S, V_lin ...], each chunk of the
features read and standardized once for every setting.

Each setting still runs its own torch L-BFGS (its own history, strong-Wolfe line search and
stopping rule, as :class:`BottleneckClassifier` with ``solver="lbfgs"`` runs it), each in a
thread of its own. A thread's closure does not compute: it asks for its loss and gradient
and waits; once every running setting has asked, one joint pass answers them all. So the
iterates are those of S separate runs (up to the float rounding of a wider product), and
the number of passes is the largest number of evaluations any setting needs, not their sum.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from .losses import HeadLoss
from .net import BottleneckNet, StandardizedProduct
from .rowspace import expanded, first_layer, reduced, row_space, use_row_space


class _Batcher:
    """Collects the closures' requests; answers when every running setting has asked."""

    def __init__(self, n: int):
        self.cond = threading.Condition()
        self.requests: set[int] = set()
        self.results: dict[int, object] = {}
        self.alive = n
        self.passes = 0

    def ask(self, s: int):
        with self.cond:
            self.requests.add(s)
            self.cond.notify_all()
            self.cond.wait_for(lambda: s in self.results)
            out = self.results.pop(s)
        if isinstance(out, BaseException):
            raise out
        return out

    def finished(self) -> None:
        with self.cond:
            self.alive -= 1
            self.cond.notify_all()

    def serve(self, evaluate) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.alive == 0 or len(self.requests) == self.alive)
                if self.alive == 0:
                    return
                batch = sorted(self.requests)
                self.requests.clear()
            try:
                answers = evaluate(batch)
            except BaseException as exc:  # every waiting thread gets the error
                answers = {s: exc for s in batch}
            self.passes += 1
            with self.cond:
                self.results.update(answers)
                self.cond.notify_all()


def fit_lbfgs_shared(X, Y: np.ndarray, settings: list[dict], *, seed: int, rows=None
                     ) -> tuple[list[BottleneckNet], list[int], int]:
    """Train one BottleneckNet per setting (dicts of BottleneckClassifier parameters with
    solver "lbfgs"; multi-label Y (n, L) 1/0/NaN of the rows trained on) on X's ``rows``
    (default: every row; X (N, d), float16 stays float16 and the rows are read chunk by
    chunk, never copied out), each by its own L-BFGS, sharing every pass over them. Initial
    weights are drawn as a lone ``BottleneckClassifier(random_state=seed)`` draws them.

    With fewer rows than features, the settings with a weight penalty train on the row
    space's coordinates (:func:`row_space`) and those without it on the features, each
    group on its own (each setting's initial draw is its own, so the split changes none).

    Returns (networks in settings order, L-BFGS iterations per setting, passes over X).
    """
    from .estimator import BottleneckClassifier

    n_rows = len(X) if rows is None else len(rows)
    alphas = [float(BottleneckClassifier(**st).alpha) for st in settings]
    small = [i for i, a in enumerate(alphas) if use_row_space(n_rows, X.shape[1], [a])]
    if small and len(small) < len(settings):
        rest = [i for i in range(len(settings)) if i not in small]
        out_nets, out_iters, passes = [None] * len(settings), [0] * len(settings), 0
        for part in (small, rest):
            nets_, iters_, p = fit_lbfgs_shared(X, Y, [settings[i] for i in part], seed=seed, rows=rows)
            for i, net, it in zip(part, nets_, iters_):
                out_nets[i], out_iters[i] = net, it
            passes += p
        return out_nets, out_iters, passes

    X = np.asarray(X)
    Y = np.asarray(Y, dtype=np.float32)
    n_out = Y.shape[1]
    ests = [BottleneckClassifier(**s) for s in settings]
    for e in ests:
        e.validate_params()
        if e.imbalance == "balanced_sampler":
            raise ValueError("imbalance='balanced_sampler' draws minibatches; solver='lbfgs' "
                             "uses every row at once: choose another imbalance option")
    nets = []
    with torch.random.fork_rng(devices=[]):
        for e in ests:  # as a lone BottleneckClassifier(random_state=seed) draws them
            torch.manual_seed(seed)
            nets.append(BottleneckNet(X.shape[1], e.bottleneck_dim, n_out))
    from .net import column_moments

    mean, var = column_moments(X, rows=rows)
    with torch.no_grad():
        nets[0].mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        nets[0].scale.copy_(torch.from_numpy((np.sqrt(var) + 1e-6).astype(np.float32)))
    for net in nets[1:]:
        net.mean.copy_(nets[0].mean)
        net.scale.copy_(nets[0].scale)
    losses = [HeadLoss(e, "multilabel", Y, n_out) for e in ests]
    n_rows = len(X) if rows is None else len(rows)
    if len(Y) != n_rows:
        raise ValueError(f"Y has {len(Y)} rows for {n_rows} training rows")
    full = nets
    basis = None
    if use_row_space(n_rows, X.shape[1], [e.alpha for e in ests]):
        basis, Z = row_space(X, rows, full[0].mean.numpy(), full[0].scale.numpy())
        nets = [reduced(net, basis) for net in full]
        x, idx = torch.from_numpy(Z), None
    else:
        x = torch.from_numpy(X)
        idx = None if rows is None else torch.as_tensor(np.asarray(rows), dtype=torch.int64)
    y = torch.from_numpy(Y)
    opts = [torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=e.max_iter, history_size=20,
                              tolerance_grad=1e-7, tolerance_change=1e-10,
                              line_search_fn="strong_wolfe") for net, e in zip(nets, ests)]

    def evaluate(batch: list[int]) -> dict[int, torch.Tensor]:
        live = [nets[s] for s in batch]
        for net in live:
            net.train()
            net.zero_grad(set_to_none=True)
        with torch.enable_grad():
            weight = torch.cat([first_layer(net).weight for net in live])
            outs = StandardizedProduct.apply(x, nets[0].mean, nets[0].scale, weight, idx).split(
                [first_layer(net).out_features for net in live], 1)
            values = []
            for s, net, out in zip(batch, live, outs):
                if net.bottleneck is None:
                    values.append(losses[s].total(out + net.head.bias, None, y, net))
                else:
                    values.append(losses[s].total(net.head(out), out, y, net))
            torch.stack(values).sum().backward()  # settings share no parameter
        return {s: v.detach() for s, v in zip(batch, values)}

    if basis is not None:
        # r <= n - 1 columns: a pass costs less than the hand-offs between threads, so each
        # setting runs alone, one after another, on its own evaluations.
        def alone(s: int) -> torch.Tensor:  # a plain autograd product: nothing to chunk
            net = nets[s]
            net.train()
            net.zero_grad(set_to_none=True)
            with torch.enable_grad():
                out = x @ first_layer(net).weight.T
                if net.bottleneck is None:
                    value = losses[s].total(out + net.head.bias, None, y, net)
                else:
                    value = losses[s].total(net.head(out), out, y, net)
                value.backward()
            return value.detach()

        passes = 0
        for s in range(len(nets)):
            opts[s].step(lambda s=s: alone(s))
            passes = max(passes, int(opts[s].state_dict()["state"].get(0, {}).get("func_evals", 0)))
        iters = [int(o.state_dict()["state"].get(0, {}).get("n_iter", 0)) for o in opts]
        return [expanded(net, big, basis).eval() for net, big in zip(nets, full)], iters, passes

    batcher = _Batcher(len(nets))
    errors: list[BaseException] = []

    def run(s: int) -> None:
        try:
            opts[s].step(lambda: batcher.ask(s))
        except BaseException as exc:
            errors.append(exc)
        finally:
            batcher.finished()

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in range(len(nets))]
    for t in threads:
        t.start()
    batcher.serve(evaluate)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    iters = [int(o.state_dict()["state"].get(0, {}).get("n_iter", 0)) for o in opts]
    return [net.eval() for net in nets], iters, batcher.passes

