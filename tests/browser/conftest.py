"""Browser tests: Playwright driving Debian's Chromium (never `playwright install`). Without a browser they skip,
except under CI=true, where a missing browser is a failure."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


NO_PLAYWRIGHT = "playwright is not installed (make test installs it)"


def _have_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


class _SkippedModule(pytest.Module):
    """A test module of this folder collected without playwright: reported as skipped, not imported (its
    module-level ``from playwright... import`` would be a collection error)."""

    def collect(self):
        pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT)
        return super().collect()


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    # a module-level importorskip in this conftest would not do: pytest treats a skip raised while it loads a
    # conftest named on the command line (`pytest tests/browser`) as an error
    if os.environ.get("CI") != "true" and not _have_playwright():
        return _SkippedModule.from_parent(parent, path=module_path)
    return None


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(NO_PLAYWRIGHT)
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
