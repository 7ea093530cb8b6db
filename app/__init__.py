"""The Fashion-MNIST classifier as an HTTP service (FastAPI); see app/main.py."""

__version__ = "0.1.0"
