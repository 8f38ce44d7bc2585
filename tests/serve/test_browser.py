"""End to end: the served page in headless Chromium, a real petals-mini photo uploaded, names shown."""
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from petalnet.classes import CLASSES
from tests.conftest import free_port
from tests.serve.conftest import ARTIFACTS


@pytest.fixture
def server(served_run):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "petalnet", "serve", served_run, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "api/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(proc.stdout.read())
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_page_names_the_flower(server, photo_file):
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            page.set_input_files("#file", photo_file)
            page.wait_for_selector("#answers .row", timeout=60_000)
            names = page.locator("#answers .row .name span:first-child").all_inner_texts()
            assert len(names) == 5 and all(n in CLASSES for n in names)
            assert "ms" in page.inner_text("#meta")
            assert page.evaluate("document.getElementById('preview').naturalWidth") == 192
            page.screenshot(path=os.path.join(ARTIFACTS, "serve-page.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
