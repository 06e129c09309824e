"""The scan of all pairs spread over ranks (issue 20): shares that cover every pair once, merged
scans equal to one scan, and a 2-process gloo run equal to one process."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.face_embedding import pairs
from tasks.face_embedding.threshold import calibrate, pair_metrics_spread, rates_at
from tests.test_face_threshold import unit_vectors


@pytest.mark.parametrize("n", [2, 7, 100, 1001])
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_row_shares_cover_every_row_once_and_balance_the_pairs(n: int, parts: int) -> None:
    shares = [pairs.row_share(n, p, parts) for p in range(parts)]
    assert shares[0][0] == 0 and shares[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
    per_share = [sum(n - 1 - i for i in range(start, end)) for start, end in shares]
    assert sum(per_share) == n * (n - 1) // 2
    if n >= 100:
        assert max(per_share) - min(per_share) <= 2 * n  # each boundary within one row of even


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_merged_shares_equal_one_scan(parts: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairs, "PAIR_BLOCK", 700)  # many blocks per share: the running top-k and its cut
    x, y = unit_vectors(160, 8, 10)
    keep = pairs.keep_for(y, [1e-3, 0.05])
    whole = pairs.scan_pairs(x, y, keep)
    merged = pairs.merge_scans([pairs.scan_pairs(x, y, keep, p, parts) for p in range(parts)], keep)
    # equal up to the last bit: a block's shape can change BLAS's summation order
    np.testing.assert_allclose(np.sort(merged.positives), np.sort(whole.positives), rtol=0, atol=1e-15)
    np.testing.assert_allclose(merged.largest, whole.largest, rtol=0, atol=1e-15)
    assert len(whole.positives) == whole.positive_count and len(whole.largest) == keep
    counts = [pairs.count_accepted(x, y, 0.3, p, parts) for p in range(parts)]
    assert tuple(map(sum, zip(*counts, strict=True))) == pairs.count_accepted(x, y, 0.3)


def _rank(rank: int, init: str, x: np.ndarray, y: np.ndarray, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        found = pair_metrics_spread(x, y, 1e-2, None)
        tested = pair_metrics_spread(x, y, None, calibrate(x, y, 1e-2))
        if rank == 0:
            assert found is not None and tested is not None
            torch.save({"val": found, "test": tested}, out)
        else:
            assert found is None and tested is None
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_one_process_metrics(tmp_path: os.PathLike[str]) -> None:
    x, y = unit_vectors(150, 8, 12)
    out = os.path.join(tmp_path, "rank0.pt")
    with tempfile.NamedTemporaryFile(dir=tmp_path, delete=False) as handle:
        init = f"file://{handle.name}"
    os.unlink(handle.name)
    mp.spawn(_rank, args=(init, x, y, out), nprocs=2, join=True)
    spread = torch.load(out, weights_only=False)
    alone = pair_metrics_spread(x, y, 1e-2, None)
    assert spread["val"] == alone
    calibration = calibrate(x, y, 1e-2)
    assert alone.calibration == calibration
    assert spread["test"].rates == rates_at(x, y, calibration.cosine)
    assert spread["test"].tar_at_far == alone.tar_at_far
