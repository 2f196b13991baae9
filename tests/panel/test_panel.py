"""The admin panel in a real browser (Debian's Chromium through Playwright), against the real
binaries: first-run setup with the token the gateway printed, login, importing an account file by
drag and drop, the account becoming ready on the overview, a streamed playground chat in every
dialect, the live log stream, the CSRF guard, logout; a screenshot of every page."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from conftest import PanelGateway, artifacts_dir, copy_to_docs

PASSWORD = "a long enough panel password"
PAGES = ["overview", "accounts", "workers", "flow", "proxies", "logs", "usage", "keys", "playground"]
DIALECTS = ["openai-chat", "openai-responses", "anthropic", "gemini"]
TIMEOUT_MS = 15_000

def _post(url: str, body: dict) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with opener.open(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture()
def page(browser, panel_gateway: PanelGateway):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    problems: list[str] = []
    # Any CSP violation or script error fails the test (answers the test provokes on purpose,
    # a wrong token, 403 without CSRF, the refused calls of the revoked key, are no problem).
    p.on(
        "console",
        lambda m: problems.append(m.text)
        if m.type == "error" and not m.text.startswith("Failed to load resource")
        else None,
    )
    p.on("pageerror", lambda e: problems.append(str(e)))
    yield p
    context.close()
    assert not problems, problems


def shot(page: Page, name: str) -> None:
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts_dir() / f"{name}.png"), full_page=True)


def test_the_panel_end_to_end(page: Page, panel_gateway: PanelGateway) -> None:
    gw = panel_gateway
    page.goto(f"{gw.base_url}/admin/panel")

    # First run: the setup form, with the token the gateway printed on its console.
    expect(page.locator("#setup-form")).to_be_visible()
    shot(page, "setup")
    page.fill("#setup-token", "setup-not-the-token-aaaaaaaaaaaaaaaaaaaa")
    page.fill("#setup-password", PASSWORD)
    page.fill("#setup-repeat", PASSWORD)
    page.click("#setup-form button[type=submit]")
    expect(page.locator("#setup-form .msg.error")).to_contain_text("wrong setup token")
    page.fill("#setup-token", gw.setup_token)
    page.click("#setup-form button[type=submit]")
    expect(page.locator("#nav-overview")).to_be_visible()
    assert (gw.workdir / "data" / "admin_password").read_text().startswith("$argon2id$")

    # Log out and in again with the password.
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    shot(page, "login")
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#nav-overview")).to_be_visible()

    # Import the account file by dropping it on the drop zone.
    page.click("#nav-accounts")
    text = gw.import_file.read_text()
    data_transfer = page.evaluate_handle(
        """([name, text]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, { type: 'application/json' }));
            return dt;
        }""",
        [gw.import_file.name, text],
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": data_transfer})
    expect(page.locator("#import-result .msg.ok")).to_contain_text(gw.import_email)
    expect(page.locator("#page table")).to_contain_text(gw.import_email)
    shot(page, "accounts")

    # The overview shows it ready.
    page.click("#nav-overview")
    account = page.locator(f'.acc[data-email="{gw.import_email}"]')
    expect(account).to_have_attribute("data-state", "ready")
    expect(page.locator("#stat-ready .stat-v")).to_have_text("1")

    # A streamed chat in every dialect.
    page.click("#nav-playground")
    page.fill("#pg-key", gw.api_key)
    page.dispatch_event("#pg-key", "change")
    page.click("#pg-load")
    expect(page.locator("#pg-model option[value='gemini-2.5-flash']")).to_have_count(1)
    page.select_option("#pg-model", "gemini-2.5-flash")
    for dialect in DIALECTS:
        page.select_option("#pg-dialect", dialect)
        page.fill("#pg-prompt", f"Hello from the {dialect} playground")
        page.click("#pg-send")
        expect(page.locator("#pg-answer[data-done=true]")).to_have_count(1)
        answer = page.inner_text("#pg-answer").strip()
        assert answer, f"{dialect}: empty answer"
        expect(page.locator("#pg-info")).to_contain_text("characters")
    assert page.evaluate("sessionStorage.getItem('b2a.playground.key')") == gw.api_key
    assert page.evaluate("localStorage.getItem('b2a.playground.key')") is None
    shot(page, "playground")

    # The log stream: the recent lines, then a new line as it is written (a failed login).
    page.click("#nav-logs")
    expect(page.locator("#log-status")).to_have_text("live")
    assert page.locator(".log-line").count() > 0
    assert _post(f"{gw.base_url}/admin/login", {"password": "not the panel password"}) == 401
    expect(page.locator(".log-line", has_text="admin panel: wrong password")).to_have_count(1)
    assert PASSWORD not in page.inner_text("#log-view")
    shot(page, "logs")

    # Every other page renders.
    for name in ["workers", "flow", "proxies"]:
        page.click(f"#nav-{name}")
        expect(page.locator(f"#page[data-page={name}] h1")).to_be_visible()
        page.wait_for_load_state("networkidle")
        shot(page, name)

    # Usage: the four playground chats, counted by /admin/stats, drawn per hour, per model and
    # per key (the configured key appears under its hashed label, never as itself).
    page.click("#nav-usage")
    # Requests and tokens per hour, and requests per hour by model and by key.
    expect(page.locator("#page svg.chart")).to_have_count(4)
    expect(page.locator("#page .legend").nth(2)).to_contain_text("gemini-2.5-flash")
    expect(page.locator("#page .legend").nth(3)).to_contain_text("config-")
    expect(page.locator("#page table")).to_contain_text("gemini-2.5-flash")
    expect(page.locator("#page .hbar-name", has_text="config-")).to_have_count(1)
    assert gw.api_key not in page.inner_text("#page")
    requests = int(page.locator("#page .stat").first.locator(".stat-v").inner_text().replace(",", ""))
    assert requests >= len(DIALECTS), requests
    shot(page, "usage")

    # Keys: create a named key limited to one model; its secret is shown once and works only
    # for that model; then revoke it from the table.
    page.click("#nav-keys")
    form = page.locator("form.keyform").first
    form.locator("input[name=name]").fill("browser-team")
    form.locator("input[name=models]").fill("gemini-2.5-flash")
    form.locator("input[name=rpm]").fill("30")
    form.locator("button[type=submit]").click()
    secret = page.locator("code.secret").inner_text()
    assert secret.startswith("sk-b2a-"), secret
    row = page.locator("#page tr", has_text="browser-team")
    expect(row).to_contain_text("gemini-2.5-flash")
    expect(row).to_contain_text(secret[:10])
    shot(page, "keys")
    statuses = page.evaluate(
        """async (key) => {
            const call = async (model) => (await fetch('/v1/chat/completions', { method: 'POST',
                headers: { 'content-type': 'application/json', authorization: 'Bearer ' + key },
                body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }) })).status;
            return [await call('gemini-2.5-flash'), await call('gemini-2.5-pro')];
        }""",
        secret,
    )
    assert statuses == [200, 403], statuses
    page.once("dialog", lambda d: d.accept())
    row.locator("button.danger").click()
    expect(page.locator("#page tr", has_text="browser-team")).to_have_count(0)
    revoked = page.evaluate(
        """async (key) => (await fetch('/v1/models', { headers: { authorization: 'Bearer ' + key } })).status""",
        secret,
    )
    assert revoked == 401, revoked

    # The overview, desktop (the README's screenshot) and phone width.
    page.click("#nav-overview")
    expect(account).to_have_attribute("data-state", "ready")
    shot(page, "overview")
    copy_to_docs(artifacts_dir() / "overview.png")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(account).to_be_visible()
    shot(page, "overview-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Chinese, chosen with the switch and remembered.
    page.select_option("#lang", "zh-CN")
    expect(page.locator("#nav-overview")).to_have_text("概览")
    page.reload()
    expect(page.locator("#nav-overview")).to_have_text("概览")
    shot(page, "overview-zh")
    page.select_option("#lang", "en")

    # A state-changing call with the session cookie but without the CSRF token: 403, and
    # nothing changed; with the token it works.
    results = page.evaluate(
        """async () => {
            const body = JSON.stringify({ use_cooldown_sec: 42 });
            const headers = { 'content-type': 'application/json' };
            const without = await fetch('/admin/config/cooldown', { method: 'POST', headers, body });
            const after = await (await fetch('/admin/status')).json();
            const csrf = (await (await fetch('/admin/session')).json()).csrf;
            const withToken = await fetch('/admin/config/cooldown',
                { method: 'POST', headers: Object.assign({ 'x-csrf-token': csrf }, headers), body });
            const final = await (await fetch('/admin/status')).json();
            return [without.status, after.cooldowns.use_sec, withToken.status, final.cooldowns.use_sec];
        }"""
    )
    assert results[0] == 403, results
    assert results[1] != 42, results
    assert results[2:] == [200, 42], results

    # Log out: the session is gone, the panel asks for the password again.
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    status = page.evaluate("async () => (await fetch('/admin/status')).status")
    assert status in (401, 403), status


def test_set_password_from_the_console(tmp_path) -> None:
    """`business2api admin set-password` reads the password from stdin and stores its hash."""
    import conftest

    binary = conftest.sdk._binary("BUSINESS2API_BIN", "business2api")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    short = subprocess.run(
        [str(binary), "admin", "set-password", "--config", str(config)],
        input=b"short\n", capture_output=True, timeout=30,
    )
    assert short.returncode == 2, short
    assert not (tmp_path / "data" / "admin_password").exists()
    done = subprocess.run(
        [str(binary), "admin", "set-password", "--config", str(config)],
        input=(PASSWORD + "\n").encode(), capture_output=True, timeout=30,
    )
    assert done.returncode == 0, done
    stored = (tmp_path / "data" / "admin_password").read_text()
    assert stored.startswith("$argon2id$v=19$") and PASSWORD not in stored
    assert (tmp_path / "data" / "admin_password").stat().st_mode & 0o777 == 0o600
    assert PASSWORD.encode() not in done.stdout + done.stderr
