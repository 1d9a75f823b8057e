"""Artifacts that a copied or moved store still shows.

MLflow keeps one artifact location per experiment and run. A `file:` location is absolute,
so a store copied elsewhere showed no artifacts, silently. Experiments made now get
`mlflow-artifacts:/<experiment folder>` instead (MLflow's proxied artifact store): the
MLflow server `sweeper ui` starts serves those from the store's own `artifacts/` folder
(`--artifacts-destination`), wherever the store is. A process writing the store directly
(the sweep's driver: its tracking URI is the store's SQLite file, not a server) resolves
them the same way, through the artifact repository `register()` puts in MLflow's registry.
Experiments made before keep their `file:` locations; `missing()` tells when those are gone.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlparse

SCHEME = "mlflow-artifacts"
FOLDER = "artifacts"  # in the store, beside mlflow.db


def location(folder: str) -> str:
    """The artifact location of a new experiment stored in `<store>/artifacts/<folder>`."""
    return f"{SCHEME}:/{folder}"


def store_of(tracking_uri: str | None) -> Path | None:
    """The store folder of a `sqlite:///<store>/mlflow.db` tracking URI (None otherwise)."""
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).parent


def local_path(artifact_uri: str, store: Path | None) -> Path | None:
    """Where `artifact_uri` is on this machine: a `file:` URI's path, or a host-less
    `mlflow-artifacts:` URI under `store`'s artifacts folder; None for anything else."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    if parsed.scheme == SCHEME and not parsed.netloc and store is not None:
        return Path(store) / FOLDER / unquote(parsed.path).lstrip("/")
    return None


def _repository(artifact_uri: str, tracking_uri: str | None = None,
                registry_uri: str | None = None):
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    path = local_path(artifact_uri, store_of(tracking_uri))
    if path is None:  # a tracking server's URI, or a host named: MLflow's own repository
        return MlflowArtifactsRepository(artifact_uri, tracking_uri, registry_uri)
    return LocalArtifactRepository(path.as_uri(), tracking_uri, registry_uri)


def register() -> None:
    """Resolve `mlflow-artifacts:` URIs under a SQLite tracking URI's store, in this process
    (MLflow alone accepts them only with an http tracking URI)."""
    from mlflow.store.artifact.artifact_repository_registry import (
        _artifact_repository_registry,
    )

    _artifact_repository_registry.register(SCHEME, _repository)


TRACKED_ROLES = ("sweep", "trial")  # runs that always hold artifacts (tracking.ROLE_TAG)


def missing(store: Path) -> str | None:
    """One line when runs of the store that always hold artifacts (a sweep's run: its
    space file; a trial's: its result) have no artifact folder here (the store was copied
    or moved with `file:` locations, or its artifacts deleted); None when all are there."""
    db = Path(store) / "mlflow.db"
    query = ("SELECT runs.artifact_uri FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
             "WHERE runs.lifecycle_stage = 'active' AND tags.key = 'sweeper.role' "
             f"AND tags.value IN ({', '.join('?' * len(TRACKED_ROLES))})")
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        uris = [row[0] for row in conn.execute(query, TRACKED_ROLES)]
    paths = [p for p in (local_path(u, Path(store).resolve()) for u in uris) if p is not None]
    gone = [p for p in paths if not p.is_dir()]
    if not gone:
        return None
    return (f"artifacts missing: {len(gone)} of {len(paths)} runs have no artifact folder "
            f"(e.g. {gone[0]}); the store was moved or copied from where its runs were "
            "logged, or its artifacts deleted: MLflow shows no artifacts for them")
