"""The service's configuration: one pydantic-settings object, read from FASHION_* variables."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FASHION_"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def shipped_model_path() -> Path:
    """models/model.pth inside the installed ``models`` package.

    Located through the import system without importing the package, which would pull
    in torch just to read the settings.
    """
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        return Path("models") / "model.pth"
    return Path(next(iter(spec.submodule_search_locations))) / "model.pth"


class SettingsError(ValueError):
    """Invalid configuration; the message names each bad variable and the valid values."""


class Settings(BaseSettings):
    """Everything the service can be told; each field is FASHION_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    model_path: Path = Field(default_factory=shipped_model_path, description="the checkpoint to serve")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="largest request body, all files and multipart framing"
    )
    # Far more than a 28x28 classifier needs, yet it bounds the memory one upload can take
    # (a 16 MP RGB image decodes to 48 MB), which is what stops decompression bombs.
    max_image_pixels: int = Field(16_000_000, ge=1, description="largest image, in pixels (width x height)")
    max_batch_files: int = Field(64, ge=1, description="most files in one /predict/batch request")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="level of the app's own log"
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device; valid: auto, cpu, cuda, cuda:N (N a GPU index)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad field, named as its environment variable."""
    problems = []
    for error in exc.errors():
        name = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "invalid settings: " + "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``overrides``); raises SettingsError with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
