"""The service's configuration: one pydantic-settings object, read from FASHION_* variables."""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "FASHION_"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# What a browser sends as Origin: scheme://host[:port], nothing after it.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/?#]+")
_ENDPOINT = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?", re.IGNORECASE)


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
    # The name the Open Inference Protocol routes serve the model under (/v2/models/<name>).
    model_name: str = Field(
        "fashion-mnist",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="the model's name on the V2 routes: letters, digits, '_', '.', '-' (at most 64)",
    )
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="largest request body, all files and multipart framing"
    )
    # A deadline on the whole body, not on the gap between chunks: a client trickling a byte
    # a second passes any gap limit and holds its connection forever. 30 s still lets a
    # 10 MiB upload through at 350 KB/s.
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="longest a request body may take to arrive; beyond it, 408"
    )
    # Far more than a 28x28 classifier needs, yet it bounds the memory one upload can take
    # (a 16 MP RGB image decodes to 48 MB), which is what stops decompression bombs.
    max_image_pixels: int = Field(16_000_000, ge=1, description="largest image, in pixels (width x height)")
    flip_average: bool | None = Field(
        None,
        description="average each image's probabilities with its mirror image's "
        "(unset: as the checkpoint says; false halves the compute and loses some accuracy)",
    )
    ood_threshold: float | None = Field(
        None,
        allow_inf_nan=False,
        description="out-of-distribution score above which a prediction is flagged "
        "(unset: the checkpoint's, which flags 3% of its validation images; higher flags fewer)",
    )
    max_batch_files: int = Field(
        64, ge=1, description="most files in one /predict/batch request, or images in one V2 infer request"
    )
    # Dynamic batching (app/inference/batching.py). 32 images of 28x28 make a forward pass that
    # amortises the per-call overhead without making the batch's last image wait long.
    max_batch_size: int = Field(32, ge=1, le=4096, description="most images in one forward pass")
    # The wait applies only while other requests are mid-preprocessing: a request that
    # finds the server idle goes straight to the model, so a lone client pays nothing.
    max_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="longest a batch waits for more images after its first one"
    )
    # A lone client's next request reaches the worker about a millisecond after its answer
    # left; a worker still polling then answers it without a wake-up, faster (measured on 2
    # cores, docs/BENCHMARKS.md). The cost is CPU that nothing else wanted: each poll yields.
    worker_spin_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="after answering, how long the inference process polls for more work "
        "before it sleeps; 0: sleep at once",
    )
    max_queue: int = Field(
        1024, ge=1, description="most images admitted and not yet answered; beyond it, 503 and Retry-After"
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="longest a request waits for its prediction; beyond it, 504"
    )
    # Kubernetes kills a pod terminationGracePeriodSeconds (30 by default) after SIGTERM;
    # the grace must end well before that, so the lifespan still gets to shut down cleanly.
    shutdown_grace_s: int = Field(
        20,
        ge=1,
        le=3600,
        description="after SIGTERM, longest fashion-serve waits for requests in flight, then cancels them",
    )
    # In one process the event loop and the inference take turns on one GIL; measured on
    # 2 cores at concurrency 64, a worker process of its own served about 2,300 requests/s against 814.
    inference_process: bool = Field(
        True,
        description="run the inference worker in a child process (true), or in a thread of the server",
    )
    # Uploads bigger than a thumbnail are decoded in processes of their own, each under the
    # two budgets below: no upload can hold the server's memory or burn its CPU.
    decode_processes: int = Field(
        2, ge=1, le=64, description="processes decoding uploads bigger than 2 KiB, each one at a time"
    )
    # The largest legitimate picture (16 MP, the pixel limit) decodes in well under this;
    # a file built to be costly is stopped here, and answered 400.
    decode_cpu_s: float = Field(
        1.0, gt=0, le=60, description="CPU time one upload may take to decode; beyond it, 400"
    )
    # A 16 MP picture (the pixel limit) takes up to 64 MiB decoded; measured, every mode
    # tested (RGBA, 16-bit, float, CMYK) decoded within 192 MiB of address space.
    decode_memory_mb: int = Field(
        256, ge=64, le=65536, description="memory one decoding process may add while decoding; beyond it, 400"
    )
    # auto: OpenVINO, else ONNX Runtime, on the CPU: measured faster per image than eager torch
    # at every batch size the worker runs, OpenVINO the faster (docs/BENCHMARKS.md); torch stays
    # the reference each is checked against.
    runtime: Literal["auto", "torch", "openvino", "onnxruntime"] = Field(
        "auto",
        description="what runs the network: auto (on the CPU, the first of openvino and onnxruntime "
        "that is installed and whose run of the export agrees with torch, else torch), torch, "
        "openvino, or onnxruntime",
    )
    # One: the model is sized for one thread, and a second would take the core the event
    # loop and the decoding need. Measured on 2 cores, torch's default (one per core) made
    # a lone request's forward pass three times slower from a worker thread.
    torch_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="CPU threads per forward pass, whichever runtime runs it; "
        "0 for torch's default (one per core)",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="level of the app's own log"
    )
    # Text for a terminal; JSON, one object a line, for a log pipeline.
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object per log line (the access line's fields as keys)"
    )
    # Empty: X-Forwarded-For is anyone's to write, so the access log gives the connecting peer.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="addresses or networks (CIDR) of proxies whose X-Forwarded-For names the client: "
        "comma-separated or a JSON list",
    )
    # Off by default: no tracing code runs on a request unless a collector is named.
    otel_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP endpoint traces are sent to (http://collector:4318, or with its "
        "/v1/traces path); unset: no tracing",
    )
    # Off by default: a service on loopback or behind an authenticating gateway needs none.
    api_key: SecretStr | None = Field(
        None, description="when set, /predict*, /model and /metrics need it as a Bearer token or X-API-Key"
    )
    # A folder of models and versions, laid out as Triton's (models/repository.py); unset, the
    # one checkpoint of model_path is served under model_name.
    model_repository: Path | None = Field(
        None,
        description="a model repository, <repository>/<model name>/<version>/model.pth: every version "
        "is served and models can be loaded and unloaded live; unset: FASHION_MODEL_PATH alone",
    )
    default_model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="the repository's model that /predict, the page and unversioned calls use "
        "(unset: the only one)",
    )
    # Its own key: these calls change what every client is served.
    admin_key: SecretStr | None = Field(
        None,
        description="key for the /v2/repository calls (load, unload, index), as a Bearer token or "
        "X-API-Key; unset: those calls answer 403",
    )
    # Off by default: the web page is served by the app itself, so only another site's
    # scripts need CORS, and each such origin should be named.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="origins whose browser scripts may call the API: comma-separated or a JSON list"
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device; valid: auto, cpu, cuda, cuda:N (N a GPU index)")
        return value

    @field_validator("max_queue")
    @classmethod
    def _check_queue(cls, value: int, info: ValidationInfo) -> int:
        files = info.data.get("max_batch_files")
        if files is not None and value < files:
            raise ValueError(
                f"{value} is less than FASHION_MAX_BATCH_FILES ({files}): a full batch request could never "
                "be admitted; raise it or lower FASHION_MAX_BATCH_FILES"
            )
        return value

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic-settings reads a list from the environment as JSON only; a comma-separated
        # value is what people write, so both are accepted.
        if not isinstance(value, str):
            return value
        value = value.strip()
        if value.startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                noun = "origins" if info.field_name == "cors_origins" else "addresses"
                raise ValueError(f"{value!r} is not a JSON list of {noun}") from None
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{proxy!r} is not an IP address or network; write 10.0.0.5, 10.0.0.0/8 or fd00::/8"
                ) from None
        return value

    @field_validator("otel_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not _ENDPOINT.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an OTLP/HTTP endpoint; write http(s)://host:port, optionally with a "
                "path (http://otel-collector:4318/v1/traces)"
            )
        # A bare collector address gets the standard traces path, as OTEL_EXPORTER_OTLP_ENDPOINT does.
        return value if urlsplit(value).path.strip("/") else value.rstrip("/") + "/v1/traces"

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Browsers send the Origin in lower case, and CORSMiddleware compares it exactly.
        value = tuple(origin.lower() for origin in value)
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin; write scheme://host[:port], without a path or a "
                    "trailing slash (https://shop.example.com), or * for any"
                )
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


# What a value must look like, by the unit its name ends in; the example is the default.
_UNITS = {"_bytes": "bytes", "_s": "seconds", "_ms": "milliseconds", "_mb": "MiB"}
_BOOLEAN = "true or false (or 1/0, yes/no, on/off)"


def expected_form(field: str) -> str | None:
    """``FASHION_<FIELD>``'s expected form, for an error on a value of the wrong type."""
    info = Settings.model_fields.get(field)
    if info is None:
        return None
    default = info.get_default(call_default_factory=False)
    annotation = str(info.annotation)
    if "bool" in annotation:
        unset = "; unset: as the checkpoint says" if default is None else ""
        return f"{_BOOLEAN}{unset}"
    unit = next((unit for suffix, unit in _UNITS.items() if field.endswith(suffix)), None)
    if "int" in annotation:
        kind = "a whole number" + (f" of {unit}" if unit else "")
    elif "float" in annotation:
        kind = "a number" + (f" of {unit}" if unit else "")
    else:
        return None
    return f"{kind}, without a unit, such as {default} (the default)"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad field, named as its environment variable, with the value given and
    what it should have been."""
    problems = []
    for error in exc.errors():
        field = "_".join(str(part) for part in error["loc"])
        name = ENV_PREFIX + field.upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        given = f"{value!r}: " if isinstance(value, str) and not message.startswith(repr(value)) else ""
        form = expected_form(field)
        if form and error["type"].endswith(("_parsing", "_type")):  # wrong kind of value, not range
            message = f"expected {form}"
        problems.append(f"{name}: {given}{message}")
    return "invalid settings: " + "; ".join(problems)


# FASHION_ variables that are not ours: the test suite's data folder (FASHION_MNIST_DIR),
# and those Kubernetes sets for a Service named fashion-mnist (FASHION_MNIST_SERVICE_HOST,
# FASHION_MNIST_PORT_80_TCP, ...) or fashion (FASHION_SERVICE_HOST, FASHION_PORT, ...).
_NOT_OURS = re.compile(rf"{ENV_PREFIX}(MNIST_.*|(.*_)?(SERVICE_HOST|SERVICE_PORT.*|PORT(_\d+_[A-Z]+.*)?))")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """FASHION_* variables that name no setting: each with the closest setting, if any."""
    fields = [name.upper() for name in Settings.model_fields]
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.removeprefix(ENV_PREFIX) in fields:
            continue
        if _NOT_OURS.fullmatch(upper):
            continue
        # Compared without the prefix, which every name shares and would make all look alike.
        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), fields, n=1, cutoff=0.6)
        valid = ", ".join(ENV_PREFIX + field for field in fields)
        hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else f"the settings are {valid}"
        problems.append(f"{name} is not a setting; {hint}")
    return problems


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the environment (and ``overrides``); raises SettingsError with a readable message.

    A misspelt FASHION_* variable is an error: ignored, it would quietly leave a default in
    place (the shipped model served instead of yours).
    """
    unknown = unknown_variables(os.environ if environ is None else environ)
    if unknown:
        raise SettingsError("unknown settings: " + "; ".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
