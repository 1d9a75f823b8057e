"""Errors meant for the user: `cli.py` prints their message on one line and exits 2."""


class SweeperError(Exception):
    """Base class of every error the user should read (not a bug)."""


class SpaceError(SweeperError):
    """The search-space YAML is invalid; the message names the file and the key."""


class DataError(SweeperError):
    """A dataset cannot be found, generated or read."""


class StoreError(SweeperError):
    """The Optuna/MLflow stores do not hold what was asked (e.g. an unknown sweep)."""
