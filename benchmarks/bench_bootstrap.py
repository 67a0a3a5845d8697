"""The user bootstrap of a comparison: one draw of the users shared by every difference, against one per difference.

Chapter 9 compares arms on all four metrics, with users resampled, overall and by history length and test step:
8 (metric, pair) differences per grouping. ``analysis.paired_bootstraps`` draws the users once per group and
applies them to every difference; calling ``analysis.paired_bootstrap`` per difference draws them once per
difference. Drawing the users (a multinomial over ~22,000 users, 1,000 times) is most of the work, so the shared
draw should be about as many times faster as there are differences. Both give the same rows exactly (checked
here, and in ``tests/test_analysis.py``).

Data: random, Amazon Beauty 3:2:5's size (83,666 test samples of 22,363 users, 6 history-length buckets).

Run:  python benchmarks/bench_bootstrap.py
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ttt4rec_edu.analysis import length_buckets, paired_bootstrap, paired_bootstraps

SAMPLES, USERS, DIFFERENCES, NUM_BOOT = 83_666, 22_363, 8, 1000


def main() -> None:
    rng = np.random.default_rng(0)
    users = np.sort(np.concatenate([np.arange(USERS), rng.integers(0, USERS, SAMPLES - USERS)]))  # every user
    groups = length_buckets(rng.integers(3, 80, SAMPLES), edges=(3, 5, 8, 13, 21, 51))
    differences = {k: rng.normal(size=SAMPLES) * (rng.random(SAMPLES) < 0.2) for k in range(DIFFERENCES)}
    start = time.perf_counter()
    shared = paired_bootstraps(differences, users, groups, num_boot=NUM_BOOT)
    t_shared = time.perf_counter() - start
    start = time.perf_counter()
    each = {k: paired_bootstrap(d, users, groups, num_boot=NUM_BOOT) for k, d in differences.items()}
    t_each = time.perf_counter() - start
    for k in differences:
        pd.testing.assert_frame_equal(shared[k], each[k], check_exact=True)
    print(f"{DIFFERENCES} differences, {SAMPLES:,} samples, {len(np.unique(users)):,} users, "
          f"{len(groups.categories)} groups + all, {NUM_BOOT} replicates; the same rows exactly")
    print(f"  one draw per difference (paired_bootstrap each): {t_each:6.2f} s")
    print(f"  one shared draw (paired_bootstraps):             {t_shared:6.2f} s")
    print(f"  ratio: {t_each / t_shared:.1f}x")


if __name__ == "__main__":
    main()
