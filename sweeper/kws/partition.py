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


def iid(indices: list[int], num_clients: int, seed: int) -> list[list[int]]:
    """A uniform random split into near-equal parts."""
    order = np.random.default_rng(seed).permutation(len(indices))
    return [sorted(indices[i] for i in part) for part in np.array_split(order, num_clients)]


def dirichlet(labels: list[int], indices: list[int], num_clients: int, alpha: float,
              seed: int) -> list[list[int]]:
    """Label skew (Hsu et al., 2019): each class is shared among clients in proportions
    drawn from Dirichlet(alpha); large alpha is close to iid, small alpha gives each client
    few classes. Every example lands in exactly one client; redrawn until no client is empty."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(labels[i], []).append(i)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for members in by_class.values():
            members = [members[i] for i in rng.permutation(len(members))]
            cuts = (np.cumsum(rng.dirichlet([alpha] * num_clients))[:-1] * len(members))
            for k, chunk in enumerate(np.split(members, cuts.astype(int))):
                parts[k].extend(int(i) for i in chunk)
        if all(parts):
            return [sorted(p) for p in parts]
    raise DataError(f"dirichlet(alpha={alpha}) left a client without data in 100 draws")
