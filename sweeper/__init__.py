"""sweeper: energy/accuracy trade-offs of federated keyword spotting, swept with Ray."""

__version__ = "0.1.0"
