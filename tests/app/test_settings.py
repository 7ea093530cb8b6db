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
        ("FASHION_MAX_IMAGE_PIXELS", "many", "valid integer"),
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
    with pytest.raises(SettingsError, match="FASHION_BODY_TIMEOUT_S: Input should be greater than 0"):
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
