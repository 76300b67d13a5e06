"""The html report in a real browser: headless Chromium loads the page of a trained and attacked run through the
DevTools protocol; the table and every image must render (no broken image) and the console must stay free of
errors. Skipped, with the reason printed, where Chromium is not installed (``.ci/run`` installs Debian's
``chromium`` when it is missing)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from advbench import api

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
_PROBE = """JSON.stringify({
  rows: document.querySelectorAll('table tbody tr').length,
  cells: Array.from(document.querySelectorAll('table tbody tr:first-child td')).map(td => td.innerText.trim()),
  tableHeight: document.querySelector('table') ? document.querySelector('table').getBoundingClientRect().height : 0,
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,
                                                 height: i.naturalHeight, shown: i.getBoundingClientRect().width})),
  title: document.title})"""


class _DevTools:
    """The few DevTools-protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))


def _page_socket(profile: Path, proc: subprocess.Popen) -> str:
    """The websocket of the browser's first page, from the port Chromium writes into its profile."""
    import urllib.request

    port_file = profile / "DevToolsActivePort"
    end = time.monotonic() + 30
    while not port_file.is_file() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"chromium did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
    return next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")


def load_in_chromium(page: Path, profile: Path, screenshot: Path | None = None) -> tuple[dict, list[str]]:
    """Open ``page`` in headless Chromium; returns (what the probe script measured, console/log errors).
    Chromium's own temporary folders (``org.chromium.*``, with a socket whose path must stay short) go to a
    temporary folder removed afterwards, not to the system's temporary directory."""
    scratch = Path(tempfile.mkdtemp(prefix="advbench-chromium-"))
    proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
                             f"--user-data-dir={profile}", "--window-size=1280,2400", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(scratch)})
    try:
        tools = _DevTools(_page_socket(profile, proc))
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=page.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        probe = json.loads(tools.call("Runtime.evaluate", expression=_PROBE, returnByValue=True)["result"]["value"])
        if screenshot is not None:
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = [json.dumps(e["params"])[:300] for e in tools.events
                  if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]
        tools.ws.close()
        return probe, errors
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does it)")
def test_html_report_renders_in_headless_chromium(tmp_path):
    pytest.importorskip("websocket", reason="websocket-client (the test extra) drives Chromium's DevTools protocol")
    settings = {"val_n": 32, "val_attack_steps": 1}
    for defense in ("standard", "pgd-at"):
        run, _ = api.train(out=tmp_path / "runs", defense=defense, dataset="synthetic", model="small-cnn", epochs=2,
                           n_train=128, batch_size=64, device="cpu", settings=settings)
        api.attack(run, suite="pgd-lite", n_eval=32, device="cpu")
    page = tmp_path / "report" / "report.html"
    table, _ = api.report([tmp_path / "runs"], fmt="html", output=page)
    probe, errors = load_in_chromium(page, tmp_path / "profile", screenshot=tmp_path / "report" / "screenshot.png")
    assert errors == []
    assert probe["title"] == "advbench report"
    assert probe["rows"] == len(table) == 2 and probe["tableHeight"] > 0
    assert probe["cells"][0] in ("pgd-at", "standard") or probe["cells"][0].startswith("pgd-at")
    assert len(probe["images"]) == 3  # accuracy vs eps, training curves, cost vs robustness
    for img in probe["images"]:
        assert img["complete"] and img["width"] > 100 and img["height"] > 100 and img["shown"] > 100
    assert (tmp_path / "report" / "screenshot.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does it)")
def test_the_probe_catches_a_broken_image_and_a_console_error(tmp_path):
    """The oracle can fail: a page with a missing image and a script error is caught on both counts."""
    pytest.importorskip("websocket", reason="websocket-client (the test extra) drives Chromium's DevTools protocol")
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><title>bad</title></head><body><table><tbody><tr><td>x</td></tr>"
                    "</tbody></table><img src=\"missing.png\"><script>console.error('boom')</script></body></html>")
    probe, errors = load_in_chromium(page, tmp_path / "profile")
    assert probe["images"][0]["width"] == 0
    assert any("boom" in e for e in errors) and any("missing.png" in e for e in errors)
