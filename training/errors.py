"""Errors of the training job that end it with one clear line."""


class DatasetError(Exception):
    """Data that cannot be used; the message says which file (and CSV line) and why."""
