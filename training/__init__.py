"""The offline training job: python -m training."""
