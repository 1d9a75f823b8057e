"""The speech use case: keyword-spotting data, features, partitions, models and training.

Nothing here knows about Flower, Optuna, Ray or MLflow.
"""
