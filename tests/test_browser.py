"""The EditingApp in a real browser: JupyterLab + headless Debian Chromium driven by Playwright.

Runs a temporary copy of notebooks/02_interventions.ipynb (Run > Run All Cells), waits for the app,
reads the edited image the page displays, moves the ratio slider with the keyboard and checks that the
displayed image changed. A screenshot lands in tests/artifacts/ (git-ignored). The server and the
browser are stopped by their own process ids, whatever happens.
"""
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]  # ~30-80 s here; the timeout only stops a hang

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02_interventions.ipynb"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SERVER_START_SECONDS = 45
APP_SECONDS = 90         # opening the notebook and running every cell (torch import, model, apps)
UPDATE_SECONDS = 20      # one debounced slider update
ARROW_PRESSES = 4        # ratio 0.50 -> 0.70 in steps of 0.05
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

# The PNG bytes the page shows for an <img>: read back through its blob: URL.
READ_IMAGE_JS = """async (selector) => {
    const image = document.querySelector(selector);
    if (!image || !image.src) return null;
    const buffer = await (await fetch(image.src)).arrayBuffer();
    return {src: image.src, bytes: Array.from(new Uint8Array(buffer))};
}"""
NO_BUSY_CELL_JS = """() => {
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')];
    return prompts.length > 0 && !prompts.some((prompt) => prompt.textContent.includes('*'));
}"""


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)  # the server and the kernels it started
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


def png_pixels(data: list[int]):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"), dtype=np.int16)


def test_editing_app_slider_changes_displayed_image(tmp_path, checkpoint, free_port):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (install it with: apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("jupyterlab")
    started = time.monotonic()

    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copy(NOTEBOOK, workdir / NOTEBOOK.name)
    kernels = tmp_path / "data" / "kernels" / "python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    environment = dict(os.environ, HKDVIZ_CHECKPOINT=checkpoint, MPLBACKEND="Agg",
                       JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
                       JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_PATH=str(tmp_path / "data"),
                       JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
                       JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), IPYTHONDIR=str(tmp_path / "ipython"))
    # No news or update toasts over the page.
    for name, values in LAB_SETTINGS.items():
        path = tmp_path / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port, secrets.token_hex(16)
    log = tmp_path / "jupyter.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
               "--port", str(port), "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={workdir}", "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, cwd=workdir, env=environment, stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server, log)
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                drive(browser, port, token)
            finally:
                browser.close()  # ends the Chromium process Playwright launched
    finally:
        stop_process_group(server)
    print(f"browser round trip: {time.monotonic() - started:.1f} s")


def drive(browser, port: int, token: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        check_slider(page, port, token)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "browser_failure.png"))  # what the page showed when it failed
        raise


def check_slider(page, port: int, token: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=APP_SECONDS * 1000)
    # A notebook opened for the first time asks which kernel to start: take the preferred one (this venv's).
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(timeout=10_000)
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        dialog.wait_for(state="detached", timeout=10_000)
    except PlaywrightTimeout:
        pass
    # The status bar reads "<kernel name> | Idle" once the kernel is up.
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=APP_SECONDS * 1000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    edited = "img.hkdviz-edited"
    page.locator(edited).wait_for(timeout=APP_SECONDS * 1000)
    page.locator("img.hkdviz-spectrum-band").wait_for(timeout=APP_SECONDS * 1000)  # the last app is up
    page.wait_for_function(NO_BUSY_CELL_JS, timeout=APP_SECONDS * 1000)         # every cell has run
    app = page.locator(".hkdviz-editing-app")
    app.scroll_into_view_if_needed()
    before = page.evaluate(READ_IMAGE_JS, edited)
    assert before is not None, "the edited image has no source"
    readout = page.locator(".hkdviz-ratio .widget-readout")
    assert readout.inner_text().strip() == "0.50"

    handle = page.locator(".hkdviz-ratio .noUi-handle")
    handle.focus()
    for _ in range(ARROW_PRESSES):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("([selector, src]) => document.querySelector(selector).src !== src",
                           arg=[edited, before["src"]], timeout=UPDATE_SECONDS * 1000)
    after = page.evaluate(READ_IMAGE_JS, edited)
    page.locator(".hkdviz-status").first.wait_for()
    status = page.locator(".hkdviz-editing-app .hkdviz-status").inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser_notebook.png"))
    app.screenshot(path=str(ARTIFACTS / "browser_editing_app.png"))

    check_box_selection(page)

    assert readout.inner_text().strip() == f"{0.5 + 0.05 * ARROW_PRESSES:.2f}"
    assert "r=0.70" in status, status
    pixels_before, pixels_after = png_pixels(before["bytes"]), png_pixels(after["bytes"])
    assert pixels_before.shape == pixels_after.shape
    assert abs(pixels_after - pixels_before).max() > 0, "the displayed edit did not change"


def check_box_selection(page) -> None:
    """Drag a box on the SpectrumExplorer's plotly scatter: the selection's decode must change."""
    explorer = page.locator(".hkdviz-spectrum-explorer")
    explorer.scroll_into_view_if_needed()
    drag_layer = explorer.locator(".js-plotly-plot .nsewdrag").first
    drag_layer.wait_for(timeout=UPDATE_SECONDS * 1000)
    band = "img.hkdviz-spectrum-band"
    before = page.evaluate(READ_IMAGE_JS, band)
    status_before = explorer.locator(".hkdviz-status").inner_text()
    box = drag_layer.bounding_box()
    page.mouse.move(box["x"] + 0.55 * box["width"], box["y"] + 0.02 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.98 * box["width"], box["y"] + 0.98 * box["height"], steps=10)
    page.mouse.up()
    page.wait_for_function("([selector, src]) => document.querySelector(selector).src !== src",
                           arg=[band, before["src"]], timeout=UPDATE_SECONDS * 1000)
    explorer.screenshot(path=str(ARTIFACTS / "browser_spectrum_explorer.png"))
    status = explorer.locator(".hkdviz-status").inner_text()
    assert status != status_before and status.startswith("rectangle:"), status
