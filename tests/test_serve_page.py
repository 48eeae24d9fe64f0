"""The page of ``undiffuse serve`` in a real browser: Debian's headless Chromium driven by Selenium loads
it from a real loopback server, generates, waits for the streamed x̂₀ previews and the final grid, compares
two samplers, inpaints an uploaded image with a painted mask, and is laid out at 1280×800 and at a phone's
width. Screenshots go to the test's folder (``UNDIFFUSE_SCREENSHOT=path.png`` also keeps the desktop one).

Without a browser the test skips — except under CI (``CI`` set), where `.ci/run` installs it and a missing
browser is a failure."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from undiffuse.serve.app import create_app  # noqa: E402
from undiffuse.serve.catalog import Catalog  # noqa: E402
from undiffuse.serve.limits import Limits  # noqa: E402
from undiffuse.serve.server import BackgroundServer  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars"]  # fmt: skip


def _browser():
    missing = [p for p in (CHROMIUM, DRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test, but {', '.join(missing)} is missing — see .ci/run")
        pytest.skip(f"no browser here ({', '.join(missing)})")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _viewport(driver, width: int, height: int) -> None:
    """The page's viewport exactly ``width``×``height`` CSS pixels (a headless window's includes no chrome)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})  # fmt: skip


def _wait(driver, predicate, seconds: float = 90.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: predicate(d))


@pytest.fixture(scope="module")
def page(tiny_run, tmp_path_factory):
    from undiffuse.cli.main import main

    table = tmp_path_factory.mktemp("page") / "wine"
    assert main(["train", "--data", "table:wine", "--out", str(table), "--steps", "3", "--quiet"]) == 0
    import dataclasses

    from serve_helpers import Slow

    catalog = Catalog([tiny_run, table], device="cpu")
    model = catalog.entries["run"].model  # 30 ms a network call: previews arrive slower than the browser is polled
    catalog.entries["run"].model = dataclasses.replace(model, denoiser=Slow(model.denoiser, 0.03))
    app = create_app(catalog, Limits(max_n=64, previews=8))
    with BackgroundServer(app) as url:
        driver = _browser()
        try:
            _viewport(driver, 1280, 800)
            driver.get(url + "/")
            _wait(driver, lambda d: d.find_element("css selector", "body").get_attribute("data-ready") == "1", 30)
            yield driver
        finally:
            driver.quit()


def _set(driver, css: str, value) -> None:
    el = driver.find_element("css selector", css)
    el.clear()
    el.send_keys(str(value))


def _stage_done(driver, css: str) -> bool:
    state = driver.find_element("css selector", css).get_attribute("data-state")
    assert state != "error", driver.find_element("css selector", f"{css} figcaption").text
    return state == "done"


def test_generate_streams_previews_then_the_grid(page, tmp_path):
    from selenium.webdriver.support.ui import Select

    assert page.find_element("css selector", "#model").get_attribute("value") == "run"
    assert "ddim" in [o.text for o in Select(page.find_element("css selector", "#sampler")).options]
    _set(page, "#n", 16)
    _set(page, "#steps", 40)
    _set(page, "#seed", 5)
    page.find_element("css selector", "#go").click()
    seen = set()  # preview images as they stream in, before the stage is done
    _wait(page, lambda d: (seen.add((d.find_element("css selector", "#stage-img").get_attribute("src") or "")[:5000]) or _stage_done(d, "#stage")))
    previews = int(page.find_element("css selector", "#stage").get_attribute("data-previews"))
    assert previews == 8 and len({s for s in seen if s.startswith("data:image/png")}) >= 2
    img = page.find_element("css selector", "#stage-img")
    assert img.get_attribute("src").startswith("blob:") and img.get_attribute("data-final") == "png"
    assert page.execute_script("return arguments[0].naturalWidth", img) == 4 * 8 + 5 * 2  # 4×4 grid of 8×8, padding 2
    assert "done in" in page.find_element("css selector", "#stage figcaption").text
    assert [a.text for a in page.find_elements("css selector", "#downloads a")] == ["download .png", "download .jpg",
                                                                                   "download .jpeg", "download .npy"]  # fmt: skip
    page.save_screenshot(str(tmp_path / "serve.png"))
    if os.environ.get("UNDIFFUSE_SCREENSHOT"):
        page.save_screenshot(os.environ["UNDIFFUSE_SCREENSHOT"])


def test_compare_runs_two_samplers_side_by_side(page):
    page.find_element("css selector", '.tab[data-tab="compare"]').click()
    page.find_element("css selector", "#cmp-go").click()
    _wait(page, lambda d: _stage_done(d, "#stage-a") and _stage_done(d, "#stage-b"))
    a, b = (page.find_element("css selector", f"{s} img").get_attribute("src") for s in ("#stage-a", "#stage-b"))
    assert a.startswith("blob:") and b.startswith("blob:") and a != b
    assert "ddim" in page.find_element("css selector", "#stage-a figcaption").text
    assert "dpmpp_2m" in page.find_element("css selector", "#stage-b figcaption").text


def test_inpainting_canvas_uploads_image_and_painted_mask(page, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains

    page.find_element("css selector", '.tab[data-tab="edit"]').click()
    path = tmp_path / "in.png"
    Image.fromarray((np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251).astype(np.uint8)).save(path)
    page.find_element("css selector", "#edit-file").send_keys(str(path))
    _wait(page, lambda d: not d.find_element("css selector", "#paint-hint").is_displayed(), 20)
    mask = page.find_element("css selector", "#paint-mask")
    ActionChains(page).move_to_element(mask).click_and_hold().move_by_offset(30, 20).release().perform()
    painted = page.execute_script("const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                                  "let k = 0; for (let i = 3; i < d.length; i += 4) k += d[i] > 0; return k;", mask)  # fmt: skip
    assert 0 < painted < 64  # some of the 8×8 cells, not all
    page.find_element("css selector", "#edit-go").click()
    _wait(page, lambda d: _stage_done(d, "#stage-edit"))
    assert page.find_element("css selector", "#stage-edit img").get_attribute("src").startswith("blob:")


def test_layout_fits_a_phone(page, tmp_path):
    page.find_element("css selector", '.tab[data-tab="generate"]').click()
    _viewport(page, 390, 844)
    time.sleep(0.2)
    width = page.execute_script("return document.documentElement.scrollWidth")
    inner = page.execute_script("return window.innerWidth")
    assert width <= inner  # nothing sticks out sideways
    form, stage = (page.find_element("css selector", s).rect for s in ("#gen-form", "#stage"))
    assert stage["y"] >= form["y"] + form["height"] - 1  # one column: the stage under the controls
    page.save_screenshot(str(tmp_path / "serve-phone.png"))
    _viewport(page, 1280, 800)


def test_api_reference_lists_the_endpoints(page):
    url = page.current_url.rsplit("/", 1)[0]
    page.get(url + "/docs")
    _wait(page, lambda d: d.find_element("css selector", "body").get_attribute("data-ready") == "1", 30)
    text = page.find_element("css selector", "#endpoints").text
    for endpoint in ("/api/sample", "/api/sample/stream", "/api/edit", "/api/models", "/api/health"):
        assert endpoint in text
    assert "guidance" in text and "classifier-free guidance scale" in text  # the body's fields and their meaning


def test_a_table_model_shows_its_rows_as_a_table(page):
    from selenium.webdriver.support.ui import Select

    page.get(page.current_url.rsplit("/", 1)[0] + "/")
    _wait(page, lambda d: d.find_element("css selector", "body").get_attribute("data-ready") == "1", 30)
    Select(page.find_element("css selector", "#model")).select_by_value("wine")
    assert page.find_element("css selector", "#sampler").get_attribute("value") == "multinomial"
    assert not page.find_element("css selector", "#guidance").is_displayed()  # no guidance for tables
    _set(page, "#n", 7)
    page.find_element("css selector", "#go").click()
    _wait(page, lambda d: _stage_done(d, "#stage"))
    rows = page.find_elements("css selector", "#result-extra table tr")
    assert len(rows) == 8 and "alcohol" in rows[0].text  # the header, then one row per sample
    assert [a.text for a in page.find_elements("css selector", "#downloads a")] == ["download .csv"]


def test_a_sound_gets_a_player_and_its_spectrogram(page):
    """No kind of data writes sound yet; the page's renderer of a .wav answer is checked on a 1 kHz tone."""
    import base64
    import io
    import wave

    buf, rate = io.BytesIO(), 16000
    t = np.arange(rate // 2) / rate
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.sin(2 * np.pi * 1000 * t) * 20000).astype("<i2").tobytes())
    url = "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()
    got = page.execute_async_script(
        "const done = arguments[arguments.length - 1], extra = document.getElementById('result-extra');"
        "RENDER.wav(null, arguments[0], extra).then(() => { const c = extra.querySelector('canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, rows = [];"
        "for (let y = 0; y < c.height; y++) rows.push(d[4 * (y * c.width + 2) + 1]);"  # green (v²), third column
        "done({audio: !!extra.querySelector('audio'), width: c.width, height: c.height, rows, rate: Number(c.dataset.sampleRate)});"
        "}, (e) => done({error: String(e)}));",
        url,
    )  # fmt: skip
    assert "error" not in got, got
    assert got["audio"] and got["height"] == 256 and got["width"] > 10
    brightest = got["height"] - 1 - int(np.argmax(got["rows"]))  # the frequency bin, counted from the bottom
    assert abs(brightest - 1000 / (got["rate"] / 512)) <= 1  # 1 kHz (the browser decodes at its own rate, 44.1 kHz)
