"""Session fixture for the SDK smoke tests: the real `business2api` binary in front of the real
`upstream-sim` binary, both on 127.0.0.1, in a temporary directory.

Binaries (build them first with `cargo build --workspace --bins`, or run ./scripts/test.sh):
- `UPSTREAM_SIM_BIN`, default `<target>/debug/upstream-sim`
- `BUSINESS2API_BIN`, default `<target>/debug/business2api`
where `<target>` is `$CARGO_TARGET_DIR` if set, else `target/` in the repository root. Relative
paths in the variables are taken from the current directory.

The simulator also runs its Google Labs Flow (Imagen / Veo) upstream with one session token
(`--flow-token`), and the gateway has Flow enabled against it: every session lists and serves
the Flow models (`FLOW_MODELS`) next to the Gemini Business ones.

Nothing here talks to anything but 127.0.0.1: proxy variables are removed from the environment
of this process (so the SDK's HTTP client cannot pick them up) and of both child processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import urllib.error
import urllib.request

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-sdk-smoke-test-key"
ACCOUNTS = 2
START_TIMEOUT_S = 30.0
# The Flow session token the simulator knows and the gateway is configured with.
FLOW_TOKEN = "flow-session-token-sdk-smoke-aaaaaaaaaaaa"
# Every Flow model id (server/src/upstream/flow/models.rs), listed while Flow is usable.
FLOW_MODELS = (
    "gemini-2.5-flash-image-landscape",
    "gemini-2.5-flash-image-portrait",
    "gemini-3.0-pro-image-landscape",
    "gemini-3.0-pro-image-portrait",
    "imagen-4.0-generate-preview-landscape",
    "imagen-4.0-generate-preview-portrait",
    "veo_3_1_t2v_fast_portrait",
    "veo_3_1_t2v_fast_landscape",
    "veo_2_1_fast_d_15_t2v_portrait",
    "veo_2_1_fast_d_15_t2v_landscape",
    "veo_2_0_t2v_portrait",
    "veo_2_0_t2v_landscape",
    "veo_3_1_i2v_s_fast_fl_portrait",
    "veo_3_1_i2v_s_fast_fl_landscape",
    "veo_2_1_fast_d_15_i2v_portrait",
    "veo_2_1_fast_d_15_i2v_landscape",
    "veo_2_0_i2v_portrait",
    "veo_2_0_i2v_landscape",
    "veo_3_0_r2v_fast_portrait",
    "veo_3_0_r2v_fast_landscape",
)
# The Gemini Business models every listing shows (besides FLOW_MODELS).
GEMINI_MODEL_COUNT = 28
# What every listing shows in these sessions.
MODEL_COUNT = GEMINI_MODEL_COUNT + len(FLOW_MODELS)
STOP_TIMEOUT_S = 10.0

# The simulator's `[sim:grounded]` answer (upstream_sim::GROUNDED_TEXT / GROUNDED_CITES): text with
# non-ASCII (é, an astral 𝄞, ☕) before its cited ranges, and its two web sources
# `(cited text, url, title)`, named after all of the text.
SEARCH_MODEL = "gemini-2.5-flash-search"
GROUNDED_PROMPT = "[sim:grounded] What is café au lait, and when did Rust 1.0 ship?"
GROUNDED_TEXT = "Café 𝄞 au lait ☕ is coffee with hot milk. Rust 1.0 shipped in 2015."
GROUNDED_CITES = [
    ("coffee with hot milk", "https://en.wikipedia.org/wiki/Caf%C3%A9_au_lait", "Café au lait — Wikipedia"),
    ("Rust 1.0 shipped in 2015", "https://blog.rust-lang.org/2015/05/15/Rust-1.0.html", "Announcing Rust 1.0"),
]

_SIM_LINE = re.compile(r"^upstream-sim listening on (http://127\.0\.0\.1:\d+)\s*$", re.M)
_FLOW_LINE = re.compile(r"^upstream-sim flow listening on (http://127\.0\.0\.1:\d+)\s*$", re.M)
_GW_LINE = re.compile(r"^business2api listening on (http://127\.0\.0\.1:\d+)\b", re.M)

# Variables that could send traffic elsewhere or change what the processes under test do:
# proxies (for this process and the children), the OpenAI SDK's own environment settings, and
# the gateway's environment overrides of the config file.
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
_SDK_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_ADMIN_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_CUSTOM_HEADERS",
    "OPENAI_WEBHOOK_SECRET",
    "OPENAI_LOG",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_LOG",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
)
_GATEWAY_VARS = (
    "BUSINESS2API_CONFIG",
    "LISTEN_ADDR",
    "DATA_DIR",
    "PROXY",
    "CONFIG_ID",
    "API_KEYS",
    "API_KEY",
)


def _scrub_environment() -> None:
    for name in list(os.environ):
        if name.upper() in _PROXY_VARS or name in _SDK_VARS:
            del os.environ[name]


_scrub_environment()


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GATEWAY_VARS and k.upper() not in _PROXY_VARS}
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def _binary(var: str, name: str) -> Path:
    value = os.environ.get(var)
    if value:
        path = Path(value).resolve()
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
        if not target.is_absolute():
            target = REPO_ROOT / target
        path = target / "debug" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.exit(
            f"{name} binary not found at {path} (set {var}, or build it: cargo build --workspace --bins)",
            returncode=2,
        )
    return path


if sys.platform.startswith("linux"):
    import ctypes

    _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork
    _PR_SET_PDEATHSIG = 1

    def _die_with_parent() -> None:
        """Runs in the child before exec: SIGTERM it if pytest itself dies abruptly."""
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

else:
    _die_with_parent = None


@dataclasses.dataclass
class Proc:
    """A child process whose stdout and stderr go to files (no pipe can fill up and block it)."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        out = self.stdout.read_text(errors="replace") if self.stdout.exists() else ""
        err = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        status = self.popen.poll()
        state = "running" if status is None else f"exited with status {status}"
        return (
            f"--- {self.name} ({state}) stdout ---\n{out.rstrip()}\n"
            f"--- {self.name} stderr ---\n{_strip_ansi(err).rstrip()}\n"
        )


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _spawn(name: str, argv: list[str], workdir: Path) -> Proc:
    stdout = workdir / f"{name}.stdout"
    stderr = workdir / f"{name}.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=workdir,
            env=_child_env(),
            preexec_fn=_die_with_parent,
        )
    return Proc(name, popen, stdout, stderr)


def _wait_for_line(proc: Proc, pattern: re.Pattern[str], deadline: float, procs: list[Proc]) -> str:
    while True:
        match = pattern.search(proc.stdout.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.popen.poll() is not None:
            _fail_start(f"{proc.name} exited before printing its listening line", procs)
        if time.monotonic() > deadline:
            _fail_start(f"{proc.name} printed no listening line within {START_TIMEOUT_S:.0f} s", procs)
        time.sleep(0.05)


def _wait_for_health(base_url: str, deadline: float, procs: list[Proc]) -> dict:
    last = "no answer yet"
    # Plain urllib without proxies: this file runs in every SDK venv (httpx2 or httpx).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(f"{base_url}/health", timeout=2.0) as response:
                text = response.read().decode("utf-8", "replace")
                last = f"HTTP {response.status}: {text[:300]}"
                body = json.loads(text)
                if body.get("status") == "ok" and isinstance(body.get("ready"), int) and body["ready"] >= 1:
                    return body
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if procs[-1].popen.poll() is not None:
            _fail_start("business2api exited while waiting for /health", procs)
        if time.monotonic() > deadline:
            _fail_start(
                f"GET {base_url}/health did not answer 200 with status ok and ready >= 1 within "
                f"{START_TIMEOUT_S:.0f} s; last: {last}",
                procs,
            )
        time.sleep(0.1)


def _wait_for_flow(base_url: str, deadline: float, procs: list[Proc]) -> None:
    """Waits until the gateway lists the Flow models (its Flow token pool has a usable token)."""
    last = "no answer yet"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    while True:
        try:
            with opener.open(request, timeout=2.0) as response:
                ids = [m.get("id") for m in json.loads(response.read()).get("data", [])]
                missing = [m for m in FLOW_MODELS if m not in ids]
                if not missing:
                    return
                last = f"not listed: {missing}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, ValueError, AttributeError) as e:
            last = f"{type(e).__name__}: {e}"
        if procs[-1].popen.poll() is not None:
            _fail_start("business2api exited while waiting for the Flow models", procs)
        if time.monotonic() > deadline:
            _fail_start(
                f"GET {base_url}/v1/models did not list the Flow models within {START_TIMEOUT_S:.0f} s; last: {last}",
                procs,
            )
        time.sleep(0.1)


def _fail_start(message: str, procs: list[Proc]) -> None:
    pytest.fail(message + "\n\n" + "\n".join(p.output() for p in procs), pytrace=False)


def _stop(proc: Proc) -> int | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Returns the exit status after SIGTERM, or
    None when the process had to be killed."""
    if proc.popen.poll() is not None:
        return proc.popen.returncode
    proc.popen.send_signal(signal.SIGTERM)
    try:
        return proc.popen.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait()
        return None


@dataclasses.dataclass(frozen=True)
class Gateway:
    base_url: str  # http://127.0.0.1:PORT, without /v1
    api_key: str
    health: dict

    def wait_until_every_account_is_ready(self, timeout_s: float = 20.0) -> None:
        """Waits until /health reports all accounts ready again: a test that makes the upstream
        fail (the simulator's cut directive) leaves accounts backing off for a few seconds, and
        the session's other tests must not inherit that."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            with opener.open(f"{self.base_url}/health", timeout=2.0) as response:
                last = json.loads(response.read())
            if isinstance(last, dict) and last.get("ready") == ACCOUNTS:
                return
            time.sleep(0.1)
        raise AssertionError(f"accounts did not all become ready within {timeout_s} s: {last}")


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    sim_bin = _binary("UPSTREAM_SIM_BIN", "upstream-sim")
    gw_bin = _binary("BUSINESS2API_BIN", "business2api")
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="business2api-sdk-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            sim = _spawn(
                "upstream-sim",
                [
                    str(sim_bin),
                    "--listen",
                    "127.0.0.1:0",
                    "--accounts",
                    str(ACCOUNTS),
                    "--write-accounts",
                    str(data_dir),
                    "--flow-token",
                    FLOW_TOKEN,
                ],
                workdir,
            )
            procs.append(sim)
            sim_url = _wait_for_line(sim, _SIM_LINE, deadline, procs)
            flow_url = _wait_for_line(sim, _FLOW_LINE, deadline, procs)

            config = {
                "listen_addr": "127.0.0.1:0",
                "data_dir": str(data_dir),
                "api_keys": [API_KEY],
                "gemini_business": {"auth_base_url": sim_url, "api_base_url": sim_url},
                "http": {"workers": 2},
                # The cut tests make accounts back off; keep that short so the session goes on.
                "pool": {"max_backoff_sec": 2},
                # Flow (Imagen / Veo) against the simulator's Flow upstream; video jobs are
                # polled every second.
                "flow": {
                    "enable": True,
                    "tokens": [FLOW_TOKEN],
                    "labs_base_url": flow_url,
                    "api_base_url": flow_url,
                    "poll_interval": 1,
                },
            }
            config_file = workdir / "config.json"
            config_file.write_text(json.dumps(config, indent=2) + "\n")

            deadline = time.monotonic() + START_TIMEOUT_S
            gw = _spawn("business2api", [str(gw_bin), "serve", "--config", str(config_file)], workdir)
            procs.append(gw)
            gw_url = _wait_for_line(gw, _GW_LINE, deadline, procs)
            health = _wait_for_health(gw_url, deadline, procs)
            _wait_for_flow(gw_url, deadline, procs)

            yield Gateway(base_url=gw_url, api_key=API_KEY, health=health)

            # Graceful shutdown is part of the smoke test: SIGTERM must stop the gateway cleanly.
            status = _stop(gw)
            if status != 0:
                if status is None:
                    how = f"did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM (killed)"
                else:
                    how = f"exited with status {status} after SIGTERM"
                pytest.fail(f"business2api {how}\n\n{gw.output()}", pytrace=False)
        finally:
            # Always, whatever happened above: gateway first, then the simulator.
            for proc in reversed(procs):
                _stop(proc)
