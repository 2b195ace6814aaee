"""medxfer.cores: the one runner of independent units, serially or in worker processes."""

from functools import partial

import numpy as np

from medxfer.cores import resumable_units, run_units, worker_split


def _draw(seed: int, X: np.ndarray) -> tuple[float, int]:
    """A seeded unit that reads a shared array and reports its worker's thread count."""
    import torch

    return float(np.random.default_rng(seed).random() + X[seed].sum()), torch.get_num_threads()


def test_run_units_in_workers_gives_the_serial_results_in_order_with_a_share_of_the_cores():
    X = np.arange(12.0).reshape(6, 2)
    calls = [partial(_draw, s, X) for s in range(6)]
    serial = list(run_units(calls, jobs=1))
    parallel = list(run_units(calls, jobs=2))
    assert [v for v, _ in parallel] == [v for v, _ in serial]
    _, share = worker_split(2, 6)
    assert {t for _, t in parallel} == {share}
    assert list(run_units([], jobs=2)) == []


def test_resumable_units_reads_back_what_was_done_and_keeps_each_result_before_yielding_it():
    X = np.zeros((4, 1))
    store = {"b": (-1.0, 0)}  # an interrupted run finished unit "b"
    seen = []

    def put(key, result):
        store[key] = result
        seen.append(key)

    units = [(k, partial(_draw, s, X)) for s, k in enumerate("abcd")]
    out = []
    for i, result in resumable_units(units, get=store.get, put=put, jobs=2):
        assert units[i][0] in store  # kept before the caller sees it
        out.append((i, result))
    assert [i for i, _ in out] == [0, 1, 2, 3]
    assert out[1][1] == (-1.0, 0) and seen == ["a", "c", "d"]
    assert [r[0] for _, r in out] == [v for v, _ in run_units([u for _, u in units], jobs=1)][:1] + [
        -1.0] + [v for v, _ in run_units([units[2][1], units[3][1]], jobs=1)]
