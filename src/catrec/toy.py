"""A synthetic dataset with real sequential signal, for CI and the smoke DAG.

Items are split into clusters laid out on a ring. Each user starts in a random cluster and, step by step,
stays in it (p=0.75), moves to the next cluster on the ring (p=0.2) or jumps anywhere (p=0.05). Inside a
cluster the next item is the successor of the previous one (p=0.6) or drawn by a power-law popularity. So the
next item depends strongly on the last few items: a sequential model beats a popularity ranking clearly.

The result is written as an ML-1M ``ratings.dat`` (``user::item::rating::timestamp``) inside a zip, so it
takes exactly the extract -> preprocess path of the real ML-1M download.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from catrec.commands import Command
from catrec.io import atomic_path

STAY, NEXT_CLUSTER = 0.75, 0.2
SUCCESSOR = 0.6
ZIPF_EXPONENT = 1.1


def generate_sequences(
    users: int, items: int, clusters: int = 8, mean_length: int = 25, seed: int = 0
) -> list[list[int]]:
    """Per-user chronological item lists (item ids 1..items, no repeats within a user, length >= 5)."""
    if items < clusters or items < 2 * clusters:
        raise ValueError(f"need at least 2 items per cluster (items={items}, clusters={clusters})")
    rng = np.random.default_rng(seed)
    members = np.array_split(np.arange(1, items + 1), clusters)
    popularity = [1.0 / np.arange(1, len(m) + 1) ** ZIPF_EXPONENT for m in members]
    popularity = [p / p.sum() for p in popularity]
    sequences = []
    for _ in range(users):
        length = max(5, int(rng.poisson(mean_length)))
        length = min(length, items // 2)
        cluster = int(rng.integers(clusters))
        position = int(rng.choice(len(members[cluster]), p=popularity[cluster]))
        seen: set[int] = set()
        sequence: list[int] = []
        while len(sequence) < length:
            item = int(members[cluster][position])
            if item not in seen:
                seen.add(item)
                sequence.append(item)
            step = rng.random()
            if step < 1 - STAY:
                cluster = (cluster + 1) % clusters if step < NEXT_CLUSTER else int(rng.integers(clusters))
                position = int(rng.choice(len(members[cluster]), p=popularity[cluster]))
            elif rng.random() < SUCCESSOR:
                position = (position + 1) % len(members[cluster])
            else:
                position = int(rng.choice(len(members[cluster]), p=popularity[cluster]))
        sequences.append(sequence)
    return sequences


def write_toy_zip(
    output: str | Path,
    member: str = "toy/ratings.dat",
    users: int = 400,
    items: int = 120,
    clusters: int = 8,
    mean_length: int = 25,
    seed: int = 0,
) -> Path:
    """Write the toy sequences as an ML-1M style ratings.dat inside ``output`` (a zip), atomically."""
    output = Path(output)
    sequences = generate_sequences(users, items, clusters, mean_length, seed)
    start = 956_703_932  # an ML-1M era Unix time; one day between a user's interactions
    lines = [
        f"{user}::{item}::{1 + (user + step) % 5}::{start + 86_400 * step}"
        for user, sequence in enumerate(sequences, start=1)
        for step, item in enumerate(sequence)
    ]
    with atomic_path(output) as temp, zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, "\n".join(lines) + "\n")
    return output


def _declare_toy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="zip file to write")
    parser.add_argument("--member", default="toy/ratings.dat", help="name of ratings.dat inside the zip")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--clusters", type=int, default=8, help="item clusters users drift through")
    parser.add_argument("--mean-length", type=int, default=25, help="mean interactions per user")
    parser.add_argument("--seed", type=int, default=0)


COMMANDS = (
    Command(
        "toy",
        "Write the synthetic toy dataset as an ML-1M style ratings.dat inside a zip.",
        _declare_toy,
        Command.calling(write_toy_zip),
    ),
)
