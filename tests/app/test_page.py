"""The web page in a real browser: uvicorn serving the shipped model, Debian's Chromium
driven by Playwright (never a downloaded browser).

CI installs the browser with ``apt-get install -y --no-install-recommends chromium``; the
tests skip, saying why, where /usr/bin/chromium or the playwright package is missing.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from models.images import decode_image, to_model_image
from models.metadata import InputSpec
from models.networks import build_model
from models.preprocessing import preprocess
from tests.app.conftest import SHIPPED_MODEL
from tests.app.images import TEXT, encode
from tests.app.live_server import live_server
from tests.conftest import TINY_CNN_ARGS

if TYPE_CHECKING:  # only for annotations: the tests skip where playwright is missing
    from playwright.sync_api import BrowserContext, Page, ViewportSize

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Flags that work in a container as root, without a display and without network access.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1024, "height": 900}
SCREENSHOT_COPY = Path("/tmp/page-screenshot.png")
TROUSER, ANKLE_BOOT = 1, 9


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn process serving the shipped model on a free port."""
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is not there yet: run python -m training")
    with live_server(SHIPPED_MODEL, tmp_path_factory.mktemp("server") / "uvicorn.log") as url:
        yield url


OWN_CLASSES = ["handbag", "pants", "shoe"]
API_KEY = "s3cret-key"


@pytest.fixture(scope="module")
def own_model_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A model of three classes of one's own, served behind an API key."""
    folder = tmp_path_factory.mktemp("own-model")
    torch.manual_seed(0)
    args = {**TINY_CNN_ARGS, "num_classes": 3}
    metrics = {"test_accuracy": 0.97, "test_split": "test", "test_count": 300}
    checkpoint = make_checkpoint(build_model("cnn", **args), "cnn", args, OWN_CLASSES, InputSpec(), metrics)
    save_checkpoint(checkpoint, folder / "mine.pth")
    with live_server(folder / "mine.pth", folder / "uvicorn.log", api_key=API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def repository_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A repository of two models: the shipped one (the default) and one of three classes."""
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is not there yet: run python -m training")
    root = tmp_path_factory.mktemp("repository")
    (root / "fashion" / "1").mkdir(parents=True)
    shutil.copyfile(SHIPPED_MODEL, root / "fashion" / "1" / "model.pth")
    torch.manual_seed(0)
    args = {**TINY_CNN_ARGS, "num_classes": 3}
    checkpoint = make_checkpoint(build_model("cnn", **args), "cnn", args, OWN_CLASSES, InputSpec())
    save_checkpoint(checkpoint, root / "own" / "2" / "model.pth")
    settings = {"model_repository": str(root), "default_model": "fashion"}
    with live_server(None, root.parent / "uvicorn.log", **settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Debian's Chromium with a fresh profile, driven by Playwright."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        # Persistent: Playwright refuses --user-data-dir in args and takes the folder here.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=DESKTOP,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, base_url: str) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(30_000)
    # Playwright turns file-chooser interception on without waiting for the browser; a
    # listener from the start means it is on before any key press can open a picker.
    page.on("filechooser", lambda chooser: None)
    page.goto(base_url + "/")
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def shipped_images(real_test_images: tuple[torch.Tensor, torch.Tensor]) -> dict[str, tuple[bytes, str]]:
    """Files to upload and the class the shipped model gives each offline (its own loading code,
    the shared preprocessing): a test-set PNG, and a shop-style photo of a trouser."""
    loaded = load_checkpoint(SHIPPED_MODEL)
    model, spec, classes = loaded.model.eval(), loaded.input_spec, list(loaded.classes)
    images, labels = real_test_images

    def classify(data: bytes) -> tuple[int, float]:
        tensor = preprocess(decode_image(data), spec.mean, spec.std).tensor
        with torch.inference_mode():
            probs = model(tensor.unsqueeze(0)).softmax(dim=1)[0]
        return int(probs.argmax()), float(probs.max())

    def first(label: int, make: Callable[[np.ndarray], bytes]) -> tuple[bytes, str]:
        # A clear example: the model is right and sure, so the page must show this class.
        for pixels, truth in zip(images.numpy(), labels.tolist(), strict=True):
            if truth == label:
                data = make(pixels)
                predicted, confidence = classify(data)
                if predicted == label and confidence > 0.9:
                    return data, classes[label]
        pytest.fail(f"no test image of {classes[label]} that the shipped model gets right")

    return {
        "test-image": first(ANKLE_BOOT, lambda pixels: encode(pixels)),
        "photo": first(TROUSER, product_photo_of),
    }


def product_photo_of(pixels: np.ndarray) -> bytes:
    """A Fashion-MNIST item as a shop would photograph it: dark on white, 300x300, RGB JPEG."""
    item = Image.fromarray(255 - pixels).resize((240, 240), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (300, 300), 255)
    canvas.paste(item, (30, 30))
    return encode(canvas.convert("RGB"), "JPEG", quality=92)


def upload(page: Page, name: str, data: bytes, mime: str) -> None:
    page.locator("#file").set_input_files({"name": name, "mimeType": mime, "buffer": data})


def shown_input_image(page: Page) -> np.ndarray:
    """The 28x28 the page shows as what the model saw, decoded from its data URL."""
    src = page.locator("#model-input").get_attribute("src")
    assert src is not None and src.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert (image.mode, image.size) == ("L", (28, 28))
    return np.asarray(image)


def check_result(page: Page, expected: str) -> None:
    result = page.locator("#result")
    result.wait_for(state="visible")
    assert page.locator("#class-name").inner_text() == expected
    assert page.locator("#error").is_hidden()
    bars = page.locator("#bars li")
    assert bars.count() == 10
    assert page.locator("#bars li.top .name").inner_text() == expected
    model_input = page.locator("#model-input")
    assert model_input.is_visible()
    size = model_input.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert size == [True, 28, 28]
    assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth > 0")


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0


def test_a_fashion_mnist_test_image_is_classified_as_offline(
    page: Page, shipped_images: dict[str, tuple[bytes, str]], tmp_path: Path
) -> None:
    data, expected = shipped_images["test-image"]
    upload(page, "ankle-boot.png", data, "image/png")
    check_result(page, expected)
    # A 28x28 grayscale reaches the network unchanged: the page shows those very pixels.
    assert np.array_equal(shown_input_image(page), np.asarray(Image.open(io.BytesIO(data))))
    assert "confident" in page.locator("#confidence").inner_text()
    screenshot(page, tmp_path / "test-image.png")
    shutil.copyfile(tmp_path / "test-image.png", SCREENSHOT_COPY)


def test_a_picture_of_no_class_is_called_so_and_still_gets_its_bars(
    page: Page, shipped_images: dict[str, tuple[bytes, str]], tmp_path: Path
) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    upload(page, "noise.png", encode(noise), "image/png")
    page.locator("#result").wait_for(state="visible")
    warning = page.locator("#ood-warning")
    assert warning.is_visible()
    assert "does not look like any of the classes" in warning.inner_text()
    assert page.locator("#bars li").count() == 10
    assert "out-of-distribution score" in page.locator("#note").inner_text()
    assert "does not look like any of the classes" in page.locator("#status").inner_text()
    screenshot(page, tmp_path / "noise.png")
    # A real item afterwards: the warning goes.
    data, expected = shipped_images["test-image"]
    upload(page, "boot.png", data, "image/png")
    page.locator("#class-name").filter(has_text=expected).wait_for()
    assert warning.is_hidden()


def test_a_product_photo_on_a_phone_sized_screen(
    page: Page, shipped_images: dict[str, tuple[bytes, str]], tmp_path: Path
) -> None:
    page.set_viewport_size(PHONE)
    data, expected = shipped_images["photo"]
    upload(page, "trouser.jpg", data, "image/jpeg")
    check_result(page, expected)
    assert "inverted" in page.locator("#note").inner_text()
    # Inverted to light on black, trimmed and fitted: the shared preprocessing's very output.
    expected_input, inverted = to_model_image(decode_image(data))
    assert inverted and np.array_equal(shown_input_image(page), np.asarray(expected_input))
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, tmp_path / "photo-phone.png")


def test_an_api_error_is_shown_in_words(page: Page, tmp_path: Path) -> None:
    upload(page, "notes.txt", TEXT, "text/plain")
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert error.inner_text().startswith("The image could not be classified: the file is text, not an image")
    assert page.locator("#result").is_hidden()
    screenshot(page, tmp_path / "error.png")


@pytest.mark.parametrize("key", ["Enter", "Space"])
def test_the_page_works_with_the_keyboard_alone(
    page: Page, shipped_images: dict[str, tuple[bytes, str]], tmp_path: Path, key: str
) -> None:
    page.keyboard.press("Tab")  # the drop zone is the first stop
    assert page.evaluate("document.activeElement.id") == "drop"
    # Enter or Space opens the file picker, as on any button; Playwright answers it.
    with page.expect_file_chooser() as chooser:
        page.keyboard.press(key)
    data, expected = shipped_images["test-image"]
    chooser.value.set_files({"name": "item.png", "mimeType": "image/png", "buffer": data})
    check_result(page, expected)
    assert page.evaluate("document.activeElement.id") == "drop"  # ready for the next image
    screenshot(page, tmp_path / f"keyboard-{key.lower()}.png")


@pytest.mark.parametrize("event", ["drop", "paste"])
def test_an_image_can_be_dropped_or_pasted(
    page: Page, shipped_images: dict[str, tuple[bytes, str]], event: str
) -> None:
    data, expected = shipped_images["test-image"]
    # The events a real drop or paste delivers, carrying the file as the browser would.
    page.evaluate(
        """([event, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "item.png", { type: "image/png" }));
            const target = document.getElementById("drop");
            target.dispatchEvent(event === "drop"
                ? new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true })
                : new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true }));
        }""",
        [event, base64.b64encode(data).decode("ascii")],
    )
    check_result(page, expected)


# --- the page learns the model; the key; the panel; the icon; /docs offline ---------------

TEN = re.compile(r"\bten\b", re.IGNORECASE)


def open_page(browser: BrowserContext, url: str) -> tuple[Page, list[tuple[str, int]], list[str]]:
    """A new page at ``url``, with every response (url, status) and every request's URL recorded."""
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.on("filechooser", lambda chooser: None)
    responses: list[tuple[str, int]] = []
    requests: list[str] = []
    page.on("response", lambda r: responses.append((r.url, r.status)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    return page, responses, requests


def test_the_shipped_model_titles_the_page_and_nothing_is_missing(
    browser: BrowserContext, base_url: str
) -> None:
    page, responses, _ = open_page(browser, base_url + "/")
    try:
        page.wait_for_function("document.title === 'Fashion-MNIST classifier'")
        assert page.locator("#title").inner_text() == "Fashion-MNIST classifier"
        lead = page.locator("#lead").inner_text()
        assert lead.startswith("Which of the model's 10 classes is in your picture: T-shirt/top, Trouser")
        assert lead.endswith("Bag or Ankle boot?")
        assert page.locator("#key-form").is_hidden()  # no key configured
        # The icon the page names is served, and no load answered 404 (the old /favicon.ico).
        icon = page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)")
        assert icon == 200
        page.wait_for_load_state("networkidle")
        assert [r for r in responses if r[1] >= 400] == []
    finally:
        page.close()


def test_about_the_model_is_a_readable_panel(browser: BrowserContext, base_url: str) -> None:
    loaded = load_checkpoint(SHIPPED_MODEL)
    page, _, _ = open_page(browser, base_url + "/")
    try:
        page.locator("#about summary").click()
        page.locator("#about-list").wait_for(state="visible")
        terms = page.locator("#about-list dt").all_inner_texts()
        values = page.locator("#about-list dd").all_inner_texts()
        about = dict(zip(terms, values, strict=True))
        assert (
            about["Architecture"] == f"cnn, {sum(p.numel() for p in loaded.model.parameters()):,} parameters"
        )
        assert about["Classes"] == "10: " + ", ".join(loaded.classes)
        accuracy = 100 * loaded.metrics["test_accuracy"]
        assert about["Accuracy"] == f"{accuracy:.2f}% on {loaded.metrics['test_count']:,} test images"
        assert about["Version"] == loaded.version
        assert about["Mirror averaging"].startswith("on")
        assert "{" not in page.locator("#about").inner_text()  # words, not JSON
        screenshot(page, Path("/tmp") / "page-about.png")
    finally:
        page.close()


def test_docs_load_nothing_from_elsewhere(browser: BrowserContext, base_url: str) -> None:
    page, responses, requests = open_page(browser, base_url + "/docs")
    try:
        page.locator(".swagger-ui .info .title").wait_for(state="visible")
        assert page.locator(".swagger-ui .info .title").inner_text().startswith("Fashion-MNIST classifier")
        page.locator(".opblock-summary-path", has_text="/predict/batch").first.wait_for(state="visible")
        page.wait_for_load_state("networkidle")
        elsewhere = [url for url in requests if not url.startswith((base_url + "/", "data:", "blob:"))]
        assert elsewhere == []
        assert [r for r in responses if r[1] >= 400] == []
    finally:
        page.close()


def test_a_model_of_three_classes_shows_them_and_the_page_asks_for_its_key(
    browser: BrowserContext, own_model_url: str, shipped_images: dict[str, tuple[bytes, str]]
) -> None:
    page, _, _ = open_page(browser, own_model_url + "/")
    sent: list[dict[str, str]] = []
    page.on("request", lambda r: sent.append(r.headers) if "/predict" in r.url else None)
    try:
        page.wait_for_function("document.title === 'Image classifier'")
        assert page.locator("#lead").inner_text() == (
            "Which of the model's 3 classes is in your picture: handbag, pants or shoe?"
        )
        key_form = page.locator("#key-form")
        key_form.wait_for(state="visible")  # GET /model answered 401
        data, _ = shipped_images["test-image"]
        upload(page, "item.png", data, "image/png")
        page.locator("#error").wait_for(state="visible")
        assert page.locator("#error").inner_text().startswith("This service needs an API key")

        page.locator("#api-key").fill("wrong")
        page.locator("#key-form button").click()
        page.wait_for_function("document.getElementById('key-note').textContent.includes('refused')")
        assert key_form.is_visible()

        page.locator("#api-key").fill(API_KEY)
        page.locator("#key-form button").click()
        key_form.wait_for(state="hidden")
        upload(page, "item.png", data, "image/png")
        page.locator("#result").wait_for(state="visible")
        assert page.locator("#class-name").inner_text() in OWN_CLASSES
        assert page.locator("#bars li .name").all_inner_texts() == OWN_CLASSES
        assert page.locator("#bars-title").inner_text() == "All 3 classes"
        page.locator("#about summary").click()
        assert page.locator("#about-list").inner_text().count("handbag, pants, shoe") == 1
        assert not TEN.search(page.locator("body").inner_text())
        assert sent[-1].get("authorization") == f"Bearer {API_KEY}"
        # Kept in the tab's memory only: nothing stored, and a reload asks again.
        stored = page.evaluate("[localStorage.length, sessionStorage.length, document.cookie]")
        assert stored == [0, 0, ""]
        screenshot(page, Path("/tmp") / "page-own-model.png")
        page.reload()
        key_form.wait_for(state="visible")
        assert page.locator("#api-key").input_value() == ""
    finally:
        page.close()


def test_with_several_models_the_page_lets_the_user_pick_one(
    browser: BrowserContext, repository_url: str, shipped_images: dict[str, tuple[bytes, str]]
) -> None:
    page, _, _ = open_page(browser, repository_url + "/")
    answers: list[dict[str, object]] = []
    page.on("response", lambda r: answers.append(r.json()) if "/predict" in r.url else None)
    try:
        page.wait_for_function("document.title === 'Fashion-MNIST classifier'")
        picker = page.locator("#model-picker")
        picker.wait_for(state="visible")
        assert picker.locator("option").all_inner_texts() == ["fashion", "own"]
        assert picker.input_value() == "fashion"
        picker.select_option("own")
        page.wait_for_function("document.title === 'Image classifier'")
        assert page.locator("#lead").inner_text().endswith("handbag, pants or shoe?")
        data, _ = shipped_images["test-image"]
        upload(page, "item.png", data, "image/png")
        page.locator("#result").wait_for(state="visible")
        assert page.locator("#bars li .name").all_inner_texts() == OWN_CLASSES
        page.locator("#about summary").click()
        page.wait_for_function("document.getElementById('about-list').innerText.includes('own, version 2')")
        assert (answers[-1]["model_name"], answers[-1]["model_version"]) == ("own", "2")
    finally:
        page.close()
