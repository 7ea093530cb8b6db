"""The models and versions the service serves, and the live changes to them.

``ModelRepository`` (registry.py) holds one ``ServedVersion`` (served.py) per loaded version:
its own inference engine (worker process) and what that loaded, which start.py builds.
"""

from app.repository.registry import ConflictError, LoadError, ModelRepository, UnknownModelError
from app.repository.served import ServedVersion

__all__ = ["ConflictError", "LoadError", "ModelRepository", "ServedVersion", "UnknownModelError"]
