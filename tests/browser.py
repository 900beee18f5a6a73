"""Headless Chromium from Debian driven by Selenium through Debian's chromium-driver, and
the review server in a thread: what the QC page tests share."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200",
    # WebGL (the NiiVue viewer) on the CPU
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    # this machine's network is closed: no background connections
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic",
)


@contextmanager
def chromium(profile_dir: Path) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("chromium / chromium-driver (Debian) not installed: run tools/install-test-tools.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def review_server(output_dir: Path, ratings: Path) -> Iterator[str]:
    """``metsprep review``'s server on a free port; yields its base URL."""
    from metsprep.review import make_server

    server = make_server(output_dir, ratings, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(driver, condition, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def body_says(name: str, value: str):
    from selenium.webdriver.common.by import By

    return lambda d: d.find_element(By.TAG_NAME, "body").get_attribute(f"data-{name}") == value


def errors_in_console(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
