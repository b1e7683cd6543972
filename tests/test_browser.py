"""The waveform widget in a real browser: JupyterLab started headless on localhost, a notebook opened in Debian's
Chromium driven by Playwright (the system browser, no download), run, a signal picked, screenshots asserted on.

Runs in `make test` where Chromium is installed (the Makefile installs it); skipped elsewhere with the reason.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.verilator, pytest.mark.mill]



def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NOTEBOOK_CELLS = [
    "import json\n"
    "from hashiflex.sim.vcd import read_vcd\n"
    "from hashiflex.sim.widgets import WaveViewer\n"
    "design = json.load(open('design.json'))\n"
    "viewer = WaveViewer(read_vcd('trace.vcd'), design)\n"
    "viewer.window.value = (viewer.window.min + 60, viewer.window.min + 140)\n"
    "viewer",
]


@pytest.fixture(scope="module")
def lab(default_flow, tmp_path_factory):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (make deps installs it on Debian)")
    pytest.importorskip("playwright.sync_api")
    import nbformat

    from hashiflex import hw
    from hashiflex.data import digits
    from hashiflex.sim import StreamSim

    work, _ = default_flow
    root = tmp_path_factory.mktemp("lab")
    d = json.loads((work / "design.json").read_text())
    StreamSim(work / "rtl", hw.read_hw_params(work / "rtl"), d).run(
        digits().x_test[:4], vcd=root / "trace.vcd", progress=False)
    (root / "design.json").write_text(json.dumps(d))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "wave.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / ".jupyter"), MPLBACKEND="module://matplotlib_inline.backend_inline")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
                             "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True"],
                            stdout=open(root / "lab.log", "w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"JupyterLab did not start:\n{(root / 'lab.log').read_text()[-2000:]}")
    yield browser, f"{url}/lab/tree/wave.ipynb?token={token}", root
    proc.terminate()
    proc.wait(timeout=30)


def test_wave_viewer_renders_and_picks_a_signal_in_chromium(lab):
    from playwright.sync_api import sync_playwright

    browser_path, url, root = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        page.get_by_text("| Idle").first.wait_for(timeout=120_000)  # the kernel is up and connected
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")  # run the cell
        # the widget renders: picker, sliders, a waveform image and the cursor table
        picker = page.locator(".widget-select-multiple select").first
        try:
            picker.wait_for(timeout=120_000)
        except Exception:
            page.screenshot(path=str(root / "failed.png"), full_page=True)
            raise AssertionError(f"the widget did not render (see {root / 'failed.png'}); page text:\n"
                                 f"{page.inner_text('body')[-3000:]}\nJupyterLab log:\n"
                                 f"{(root / 'lab.log').read_text()[-3000:]}")
        page.locator(".widget-output img").first.wait_for(timeout=60_000)
        options = picker.locator("option").all_inner_texts()
        assert "TOP.in_valid" in options and len(options) > 100
        before = page.locator(".widget-output img").first.get_attribute("src")
        page.screenshot(path=str(root / "rendered.png"))
        # pick a signal: the waveform is redrawn and the cursor table lists it
        no_news = page.get_by_role("button", name="No")
        if no_news.count():
            no_news.first.click()
        picker.select_option(["TOP.in_valid", "TOP.in_bits_0", "TOP.Hashiflex_digits_cnn.conv1.out_valid",
                              "TOP.Hashiflex_digits_cnn.conv2.out_valid", "TOP.Hashiflex_digits_cnn.conv2.out_bits_0",
                              "TOP.Hashiflex_digits_cnn.pool.out_valid", "TOP.out_valid", "TOP.out_bits_0"])
        page.wait_for_function(
            "prev => { const i = document.querySelector('.widget-output img'); return i && i.src !== prev; }",
            arg=before, timeout=60_000)
        page.wait_for_selector("text=conv1.out_valid", timeout=30_000)
        table = page.locator(".widget-html").first.inner_text()
        assert "Hashiflex_digits_cnn.conv1.out_valid" in table and "in_bits_0" in table
        decoder = page.locator(".widget-html").nth(1).inner_text()
        assert "TOP.in" in decoder and "layer conv2" in decoder
        img = page.locator(".widget-output img").first.bounding_box()
        assert img["width"] > 400 and img["height"] > 80
        page.screenshot(path=str(root / "picked.png"), full_page=True)
        browser.close()
    shot = root / "picked.png"
    assert shot.stat().st_size > 20_000
    from tests.conftest import ROOT

    shutil.copy(shot, ROOT / "build" / "wave_viewer.png")  # the newest screenshot, for the README
