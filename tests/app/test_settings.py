from pathlib import Path

import pytest

from app.settings import Settings, SettingsError, load_settings, shipped_model_path
from tests.conftest import REPO


def test_defaults_serve_the_shipped_model_with_the_documented_limits() -> None:
    settings = load_settings()
    assert settings.model_path == REPO / "models" / "model.pth"
    assert settings.model_path == shipped_model_path()
    assert settings.device == "auto"
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_image_pixels == 16_000_000
    assert settings.max_batch_files == 64
    assert settings.log_level == "info"
    assert settings.flip_average is None  # as the checkpoint says


def test_every_field_is_read_from_one_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHION_MODEL_PATH", "/srv/model.pth")
    monkeypatch.setenv("FASHION_DEVICE", "CUDA:1")
    monkeypatch.setenv("FASHION_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("FASHION_MAX_IMAGE_PIXELS", "2000")
    monkeypatch.setenv("FASHION_MAX_BATCH_FILES", "3")
    monkeypatch.setenv("FASHION_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("FASHION_FLIP_AVERAGE", "false")
    settings = load_settings()
    assert settings == Settings(
        model_path=Path("/srv/model.pth"),
        device="cuda:1",
        max_upload_bytes=1000,
        max_image_pixels=2000,
        max_batch_files=3,
        log_level="debug",
        flip_average=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FASHION_DEVICE", "gpu", "'gpu' is not a device; valid: auto, cpu, cuda, cuda:N"),
        ("FASHION_DEVICE", "cuda:x", "valid: auto, cpu, cuda, cuda:N"),
        ("FASHION_LOG_LEVEL", "loud", "'debug', 'info', 'warning', 'error' or 'critical'"),
        ("FASHION_MAX_UPLOAD_BYTES", "0", "greater than or equal to 1"),
        (
            "FASHION_MAX_IMAGE_PIXELS",
            "many",
            "'many': expected a whole number, without a unit, such as 16000000",
        ),
        (
            "FASHION_MAX_UPLOAD_BYTES",
            "10MB",
            "'10MB': expected a whole number of bytes, without a unit, such as 10485760",
        ),
        (
            "FASHION_FLIP_AVERAGE",
            "ture",
            "'ture': expected true or false (or 1/0, yes/no, on/off); unset: as the checkpoint",
        ),
        (
            "FASHION_BODY_TIMEOUT_S",
            "30s",
            "'30s': expected a number of seconds, without a unit, such as 30.0",
        ),
        ("FASHION_MAX_BATCH_FILES", "-1", "greater than or equal to 1"),
    ],
)
def test_an_invalid_value_is_refused_with_the_valid_ones(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid settings: {variable}: ")
    assert expected in message
    assert "\n" not in message


def test_several_bad_values_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHION_DEVICE", "tpu")
    monkeypatch.setenv("FASHION_MAX_BATCH_FILES", "0")
    with pytest.raises(SettingsError, match=r"FASHION_DEVICE: .*; FASHION_MAX_BATCH_FILES: "):
        load_settings()


def test_batching_settings_have_the_documented_defaults_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings()
    assert (defaults.max_batch_size, defaults.max_batch_wait_ms, defaults.max_queue) == (32, 2.0, 1024)
    assert (defaults.request_timeout_s, defaults.decode_processes, defaults.torch_threads) == (30.0, 2, 1)
    assert (defaults.decode_cpu_s, defaults.decode_memory_mb) == (1.0, 256)
    monkeypatch.setenv("FASHION_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("FASHION_MAX_BATCH_WAIT_MS", "0.5")
    monkeypatch.setenv("FASHION_MAX_QUEUE", "64")
    monkeypatch.setenv("FASHION_REQUEST_TIMEOUT_S", "5")
    monkeypatch.setenv("FASHION_DECODE_PROCESSES", "4")
    monkeypatch.setenv("FASHION_DECODE_CPU_S", "0.25")
    monkeypatch.setenv("FASHION_DECODE_MEMORY_MB", "256")
    monkeypatch.setenv("FASHION_TORCH_THREADS", "0")
    settings = load_settings()
    assert (settings.max_batch_size, settings.max_batch_wait_ms, settings.max_queue) == (8, 0.5, 64)
    assert (settings.request_timeout_s, settings.decode_processes, settings.torch_threads) == (5.0, 4, 0)
    assert (settings.decode_cpu_s, settings.decode_memory_mb) == (0.25, 256)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FASHION_MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("FASHION_MAX_BATCH_WAIT_MS", "-1", "greater than or equal to 0"),
        ("FASHION_MAX_BATCH_WAIT_MS", "5000", "less than or equal to 1000"),
        ("FASHION_MAX_QUEUE", "10", "less than FASHION_MAX_BATCH_FILES (64)"),
        ("FASHION_REQUEST_TIMEOUT_S", "0", "greater than 0"),
        ("FASHION_DECODE_PROCESSES", "0", "greater than or equal to 1"),
        ("FASHION_DECODE_CPU_S", "0", "greater than 0"),
        ("FASHION_DECODE_MEMORY_MB", "16", "greater than or equal to 64"),
        ("FASHION_TORCH_THREADS", "-1", "greater than or equal to 0"),
    ],
)
def test_invalid_batching_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"invalid settings: {variable}: ")
    assert expected in str(caught.value)


def test_the_body_timeout_defaults_to_30_s_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().body_timeout_s == 30.0
    monkeypatch.setenv("FASHION_BODY_TIMEOUT_S", "2.5")
    assert load_settings().body_timeout_s == 2.5
    monkeypatch.setenv("FASHION_BODY_TIMEOUT_S", "0")
    with pytest.raises(SettingsError, match="FASHION_BODY_TIMEOUT_S: '0': Input should be greater than 0"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", ()),
        ("https://shop.example.com", ("https://shop.example.com",)),
        (" https://a.example, http://B.example:8080 ,", ("https://a.example", "http://b.example:8080")),
        ('["https://a.example", "http://localhost:3000"]', ("https://a.example", "http://localhost:3000")),
        ("*", ("*",)),
    ],
)
def test_cors_origins_are_read_comma_separated_or_as_json(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: tuple[str, ...]
) -> None:
    assert load_settings().cors_origins == ()
    monkeypatch.setenv("FASHION_CORS_ORIGINS", value)
    assert load_settings().cors_origins == origins


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "https://shop.example.com/",
            "'https://shop.example.com/' is not an origin; write scheme://host[:port]",
        ),
        ("shop.example.com", "'shop.example.com' is not an origin"),
        ('["https://a.example"', "is not a JSON list of origins"),
    ],
)
def test_a_malformed_origin_is_refused_saying_how_to_write_one(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("FASHION_CORS_ORIGINS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("invalid settings: FASHION_CORS_ORIGINS: ")
    assert expected in str(caught.value)


def wrong_kind_of_value(field: str) -> str | None:
    annotation = str(Settings.model_fields[field].annotation)
    if "bool" in annotation:
        return "ture"
    if "int" in annotation or "float" in annotation:
        return "10MB"
    return None


# Every number and on/off setting; the others take any text (a path, a key) or have a
# validator of their own whose message lists the valid values (tested above).
TYPED = [field for field in Settings.model_fields if wrong_kind_of_value(field)]


@pytest.mark.parametrize("field", TYPED)
def test_every_setting_names_what_it_takes_when_given_the_wrong_kind_of_value(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    value = wrong_kind_of_value(field)
    assert value is not None
    name = "FASHION_" + field.upper()
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid settings: {name}: {value!r}: expected ")
    default = Settings.model_fields[field].default
    assert (
        ("true or false" in message) if value == "ture" else (f"such as {default} (the default)" in message)
    )


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("FASHION_MODEL_PAHT", "did you mean FASHION_MODEL_PATH?"),
        ("FASHION_API_KYE", "did you mean FASHION_API_KEY?"),
        ("FASHION_DEVCE", "did you mean FASHION_DEVICE?"),
        ("FASHION_WHATEVER", "the settings are FASHION_MODEL_PATH, FASHION_MODEL_NAME, FASHION_DEVICE, "),
    ],
)
def test_an_unknown_variable_stops_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, hint: str
) -> None:
    monkeypatch.setenv(variable, "/srv/mine.pth")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"unknown settings: {variable} is not a setting; {hint}")


@pytest.mark.parametrize(
    "variable",
    ["FASHION_MNIST_DIR", "FASHION_MNIST_SERVICE_HOST", "FASHION_MNIST_PORT_80_TCP_ADDR",
     "FASHION_MNIST_PORT", "FASHION_SERVICE_PORT_HTTP", "FASHION_PORT"],
)  # fmt: skip
def test_variables_that_are_not_ours_are_left_alone(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    # The tests' data folder, and what Kubernetes sets for a Service named fashion-mnist or fashion.
    monkeypatch.setenv(variable, "10.0.0.1")
    assert load_settings().device == "auto"


def test_observability_settings_default_to_text_logs_no_trusted_proxy_and_no_tracing() -> None:
    settings = load_settings()
    assert settings.log_format == "text"
    assert settings.trusted_proxies == ()
    assert settings.otel_endpoint is None


def test_observability_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHION_LOG_FORMAT", "JSON")
    monkeypatch.setenv("FASHION_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.5,fd00::/8")
    monkeypatch.setenv("FASHION_OTEL_ENDPOINT", "http://otel-collector:4318")
    settings = load_settings()
    assert settings.log_format == "json"
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.5", "fd00::/8")
    assert settings.otel_endpoint == "http://otel-collector:4318/v1/traces"
    monkeypatch.setenv("FASHION_TRUSTED_PROXIES", '["10.0.0.1"]')
    assert load_settings().trusted_proxies == ("10.0.0.1",)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FASHION_LOG_FORMAT", "yaml", "'text' or 'json'"),
        (
            "FASHION_TRUSTED_PROXIES",
            "10.0.0.0/8,proxy.local",
            "'proxy.local' is not an IP address or network",
        ),
        ("FASHION_TRUSTED_PROXIES", "[10.0.0.1", "is not a JSON list of addresses"),
        ("FASHION_OTEL_ENDPOINT", "otel-collector:4318", "is not an OTLP/HTTP endpoint; write http(s)://"),
        ("FASHION_OTEL_ENDPOINT", "grpc://collector:4317", "is not an OTLP/HTTP endpoint"),
    ],
)
def test_invalid_observability_settings_are_refused_saying_how_to_write_them(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert f"{variable}: " in str(caught.value) and expected in str(caught.value)


def test_every_setting_is_documented_in_the_configuration_guide() -> None:
    guide = (REPO / "docs" / "CONFIGURATION.md").read_text()
    missing = [name for name in Settings.model_fields if f"`FASHION_{name.upper()}`" not in guide]
    assert not missing
