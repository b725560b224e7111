"""Time ``cascade_matrix`` (Eq. 4.11) on a Clothing-sized input: 39,387 users x T = 50, 23,033 items.

Lengths follow a shifted geometric law (5-core Amazon data: most users have a few items, very few reach T),
items a Zipf-like popularity, so padding, repeats and popular items look like the real set. Run:
``.venv/bin/python bench/cascade_speed.py``; the cascade stage must stay well under 1 s on a CPU.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from catrec.cascade import cascade_matrix

USERS, ITEMS, MAX_LEN, BATCH_SIZE = 39_387, 23_033, 50, 128
# Clothing: 278,677 / 39,387 = 7.08 interactions per user; the training inputs lack the validation and test
# items and the last training item (it is only a target), so 4.08 on average and at least 2 (5-core).
MEAN_INPUT_LENGTH = 278_677 / USERS - 3


def clothing_like_inputs(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(1 + rng.geometric(1 / (MEAN_INPUT_LENGTH - 1), USERS), MAX_LEN)
    popularity = 1.0 / np.arange(1, ITEMS + 1) ** 0.9
    items = rng.choice(np.arange(1, ITEMS + 1), size=(USERS, MAX_LEN), p=popularity / popularity.sum())
    padding = np.arange(MAX_LEN)[None, :] < (MAX_LEN - lengths)[:, None]
    return torch.from_numpy(np.where(padding, 0, items))


def main() -> None:
    torch.set_num_threads(1)
    seqs = clothing_like_inputs()
    cascade_matrix(seqs, BATCH_SIZE)  # warm-up: first-call allocations are not the steady cost
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        cascade_matrix(seqs, BATCH_SIZE)
        timings.append(time.perf_counter() - started)
    real = int((seqs != 0).sum())
    print(
        f"cascade_matrix on {USERS} x {MAX_LEN} ({real} real positions, {ITEMS} items), 1 thread: "
        f"best {min(timings):.3f} s, median {sorted(timings)[2]:.3f} s"
    )


if __name__ == "__main__":
    main()
