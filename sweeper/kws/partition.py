"""Split the training examples across federated clients."""

from __future__ import annotations

import numpy as np

from sweeper.errors import DataError


def by_speaker(speakers: list[str], indices: list[int], num_clients: int,
               seed: int) -> list[list[int]]:
    """Natural partition: each speaker's examples go to one client; speakerless examples
    (silence) are dealt round-robin. Same seed, same partition."""
    rng = np.random.default_rng(seed)
    voiced = sorted({speakers[i] for i in indices if speakers[i]})
    if len(voiced) < num_clients:
        raise DataError(f"{len(voiced)} training speakers cannot feed {num_clients} clients")
    order = [voiced[i] for i in rng.permutation(len(voiced))]
    owner = {spk: k % num_clients for k, spk in enumerate(order)}
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    unvoiced = 0
    for i in indices:
        if speakers[i]:
            parts[owner[speakers[i]]].append(i)
        else:
            parts[unvoiced % num_clients].append(i)
            unvoiced += 1
    return parts
