"""Session fixture for the admin panel's browser test: the real `business2api` binary in front of
the real `upstream-sim` binary on 127.0.0.1, in a temporary directory, with no admin password and
no admin key (the panel's first run), and Debian's Chromium driven by Playwright.

The process helpers (binaries, spawning, listening lines, stopping) are those of
tests/sdk/conftest.py, loaded from that file under another module name.

Environment:
- `BUSINESS2API_BIN`, `UPSTREAM_SIM_BIN`: as for tests/sdk (default `<target>/debug/...`).
- `CHROMIUM_BIN`: the browser (default `/usr/bin/chromium`).
- `PANEL_ARTIFACTS`: where screenshots go (default `target/panel-artifacts` in the repository).
- `PANEL_UPDATE_DOCS=1`: also copy the desktop overview screenshot to `docs/panel.png`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

_SDK_CONFTEST = Path(__file__).resolve().parents[1] / "sdk" / "conftest.py"
_spec = importlib.util.spec_from_file_location("business2api_sdk_helpers", _SDK_CONFTEST)
assert _spec is not None and _spec.loader is not None
sdk = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sdk  # dataclasses look their module up there
_spec.loader.exec_module(sdk)

REPO_ROOT = sdk.REPO_ROOT
API_KEY = "sk-panel-browser-test-key"
# The gateway prints the one-time token on stdout, indented on a line of its own.
_SETUP_LINE = re.compile(r"^\s+(setup-[A-Za-z0-9_-]{20,})\s*$", re.M)


@dataclasses.dataclass(frozen=True)
class PanelGateway:
    base_url: str
    api_key: str
    setup_token: str
    # An account file the gateway does not have yet (the browser imports it).
    import_file: Path
    import_email: str
    workdir: Path
    gateway: object  # sdk.Proc


def artifacts_dir() -> Path:
    value = os.environ.get("PANEL_ARTIFACTS")
    path = Path(value) if value else REPO_ROOT / "target" / "panel-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def panel_gateway() -> Iterator[PanelGateway]:
    sim_bin = sdk._binary("UPSTREAM_SIM_BIN", "upstream-sim")
    gw_bin = sdk._binary("BUSINESS2API_BIN", "business2api")
    procs: list = []
    with tempfile.TemporaryDirectory(prefix="business2api-panel-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        sim_accounts = workdir / "sim-accounts"
        try:
            deadline = time.monotonic() + sdk.START_TIMEOUT_S
            sim = sdk._spawn(
                "upstream-sim",
                [str(sim_bin), "--listen", "127.0.0.1:0", "--accounts", "1", "--write-accounts", str(sim_accounts)],
                workdir,
            )
            procs.append(sim)
            sim_url = sdk._wait_for_line(sim, sdk._SIM_LINE, deadline, procs)
            files = sorted(sim_accounts.glob("*.json"))
            assert len(files) == 1, files
            import_file = files[0]
            import_email = json.loads(import_file.read_text())["email"]

            config = {
                "listen_addr": "127.0.0.1:0",
                "data_dir": str(data_dir),
                "api_keys": [API_KEY],
                "gemini_business": {"auth_base_url": sim_url, "api_base_url": sim_url},
                "http": {"workers": 2},
            }
            config_file = workdir / "config.json"
            config_file.write_text(json.dumps(config, indent=2) + "\n")
            deadline = time.monotonic() + sdk.START_TIMEOUT_S
            gw = sdk._spawn("business2api", [str(gw_bin), "serve", "--config", str(config_file)], workdir)
            procs.append(gw)
            gw_url = sdk._wait_for_line(gw, sdk._GW_LINE, deadline, procs)
            token = sdk._wait_for_line(gw, _SETUP_LINE, deadline, procs)

            yield PanelGateway(
                base_url=gw_url,
                api_key=API_KEY,
                setup_token=token,
                import_file=import_file,
                import_email=import_email,
                workdir=workdir,
                gateway=gw,
            )

            status = sdk._stop(gw)
            if status != 0:
                pytest.fail(f"business2api did not stop cleanly ({status})\n\n{gw.output()}", pytrace=False)
        finally:
            for proc in reversed(procs):
                sdk._stop(proc)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.exit(f"Chromium not found at {executable} (Debian: apt-get install chromium)", returncode=2)
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def copy_to_docs(screenshot: Path) -> None:
    if os.environ.get("PANEL_UPDATE_DOCS") == "1":
        shutil.copyfile(screenshot, REPO_ROOT / "docs" / "panel.png")
