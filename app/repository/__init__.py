"""The models and versions the service serves, and the live changes to them.

``ModelRepository`` (registry.py) holds one ``ServedVersion`` (served.py) per loaded version:
its predictor and its own inference engine (worker process), which start.py builds.
"""

from app.repository.registry import ConflictError, LoadError, ModelRepository, UnknownModelError
from app.repository.served import ServedVersion

__all__ = ["ConflictError", "LoadError", "ModelRepository", "ServedVersion", "UnknownModelError"]
