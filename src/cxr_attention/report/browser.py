"""Open a Snakemake HTML report in headless Chromium and record what a reader would see.

Chromium is driven through the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4 of the browser process, JSON messages ending in a NUL byte), so no network
port and no Python package beyond the standard library is needed. Console errors are taken from
the protocol's events (uncaught exceptions, ``console.error``/``console.assert``, and the
browser's own error log entries such as failed loads) rather than from Chromium's stderr, whose
log lines mix in unrelated messages (D-Bus, GPU probing).

The report's page is a React application (Snakemake's html_reporter). The check waits until it
has started, then, through its global ``app`` object, opens every category and subcategory (the
list of results must show each result's labels, or its path when unlabelled) and every result
(an image must decode with a non-zero size; an HTML page must be placed in its frame), taking a
screenshot of each view when asked.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_NAMES", "BrowserError", "ReportCheck", "check_report", "find_chromium"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in containers and CI; the report is our own file
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


@dataclass
class ReportCheck:
    """What opening a report showed.

    Attributes
    ----------
    console_errors : list of str
        Uncaught exceptions, console errors and browser error log entries, in order.
    results : dict
        Result path -> ``{"name", "mime", "labels", "caption", "listed", "shown", "width",
        "height"}`` (``caption`` as the report's HTML):
        ``listed`` when its subcategory's list showed its labels (or path), ``shown`` when its
        view rendered (image decoded, or HTML frame present).
    categories : dict
        Category -> subcategory -> result paths, as the report holds them.
    screenshots : list of Path
        PNG screenshots written (one per view), when a folder was given.
    """

    console_errors: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    categories: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    screenshots: list[Path] = field(default_factory=list)


def find_chromium() -> str | None:
    """Path of a Chromium or Chrome executable on ``PATH`` (``$CHROMIUM`` first), or None."""
    override = os.environ.get("CHROMIUM")
    for name in ((override,) if override else ()) + CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def check_report(
    report_html: str | os.PathLike,
    *,
    screenshot_dir: str | os.PathLike | None = None,
    chromium: str | None = None,
    timeout: float = 90.0,
    viewport: tuple[int, int] = (1400, 900),
) -> ReportCheck:
    """Open ``report_html`` in headless Chromium, visit every category and result, record errors.

    Parameters
    ----------
    report_html : path-like
        A report written by ``snakemake --report report.html``.
    screenshot_dir : path-like, optional
        Write a screenshot of the start page, each subcategory and each result here.
    chromium : str, optional
        Browser executable; default :func:`find_chromium`.
    timeout : float
        Seconds for the whole check.
    viewport : (width, height)

    Returns
    -------
    ReportCheck

    Raises
    ------
    BrowserError
        No browser, or it did not answer in time.
    """
    executable = chromium or find_chromium()
    if executable is None:
        raise BrowserError(f"no Chromium found on PATH (tried {', '.join(CHROMIUM_NAMES)})")
    url = Path(report_html).resolve().as_uri()
    shots = Path(screenshot_dir) if screenshot_dir is not None else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    check = ReportCheck()
    deadline = time.monotonic() + timeout
    with _devtools(executable, deadline) as tools:
        session = tools.open_page(viewport)
        tools.call("Page.navigate", {"url": url}, session)
        tools.wait_for_event("Page.loadEventFired", session)
        tools.wait_until(
            "typeof app !== 'undefined' && "
            "document.querySelector('#loading-screen').style.display === 'none'",
            session,
        )
        _snap(tools, session, shots, "00_start", check)
        state = tools.evaluate(
            "JSON.stringify({categories: categories, results: Object.fromEntries("
            "Object.entries(results).map(([p, r]) => [p, {name: r.name, mime: r.mime_type,"
            " labels: r.labels, caption: r.caption}])) })",
            session,
        )
        state = json.loads(state)
        check.categories = state["categories"]
        for path, entry in state["results"].items():
            check.results[path] = {
                "name": entry["name"],
                "mime": entry["mime"],
                "labels": entry["labels"] or {},
                "caption": entry["caption"] or "",
                "listed": False,
                "shown": False,
                "width": 0,
                "height": 0,
            }
        for number, (category, subcategories) in enumerate(sorted(check.categories.items())):
            for sub_number, (subcategory, paths) in enumerate(sorted(subcategories.items())):
                # Back to the menu first: a results list keeps the state it was built with, so
                # going from one subcategory straight to another would still show the old list.
                tools.evaluate("app.setView({navbarMode: 'menu'})", session)
                tools.settle(0.1)
                view = {"navbarMode": "subcategory", "category": category}
                view["subcategory"] = subcategory
                tools.evaluate(f"app.setView({json.dumps(view)})", session)
                text = _settled_text(tools, session)
                for path in paths:
                    entry = check.results[path]
                    wanted = [str(v) for v in entry["labels"].values()] or [path]
                    entry["listed"] = all(w in text for w in wanted)
                _snap(tools, session, shots, f"{number + 1:02d}_{sub_number:02d}_list", check)
        for number, (path, entry) in enumerate(sorted(check.results.items())):
            _show_result(tools, session, path, entry)
            _snap(tools, session, shots, f"result_{number:02d}_{Path(path).stem}", check)
        tools.settle(0.3)
        check.console_errors = list(tools.errors)
    return check


def _show_result(tools: _DevTools, session: str, path: str, entry: dict[str, Any]) -> None:
    mime = entry["mime"] or ""
    content = "img" if mime.startswith("image/") else "html" if mime == "text/html" else None
    if content is None:
        entry["shown"] = None  # offered for download only; nothing to render
        return
    key = json.dumps(path)
    tools.evaluate(
        f"app.setView({{content: {json.dumps(content)}, contentPath: results[{key}].data_uri,"
        f" resultPath: {key}}})",
        session,
    )
    # The element showing this result is the one whose source is the result's own data URI
    # (the report's logo is a data-URI image too).
    tag = "img" if content == "img" else "iframe"
    size = (
        "[e.naturalWidth, e.naturalHeight]"
        if content == "img"
        else "[e.clientWidth, e.clientHeight]"
    )
    ready = "e.complete && e.naturalWidth > 0" if content == "img" else "e.clientWidth > 0"
    found = tools.wait_until(
        f"(() => {{ const e = Array.from(document.querySelectorAll('{tag}'))"
        f".find(x => x.getAttribute('src') === results[{key}].data_uri);"
        f" return e && {ready} ? {size} : null; }})()",
        session,
        fail_ok=True,
    )
    if found:
        entry["shown"], entry["width"], entry["height"] = True, found[0], found[1]
        if content == "html":
            tools.settle(0.5)  # let the frame load, so its errors (if any) are reported


def _settled_text(tools: _DevTools, session: str) -> str:
    tools.settle(0.2)
    return tools.evaluate("document.body.innerText", session)


def _snap(
    tools: _DevTools, session: str, folder: Path | None, name: str, check: ReportCheck
) -> None:
    if folder is None:
        return
    tools.settle(0.2)
    data = tools.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(data))
    check.screenshots.append(path)


@contextlib.contextmanager
def _devtools(executable: str, deadline: float) -> Iterator[_DevTools]:
    with tempfile.TemporaryDirectory(prefix="cxr-report-browser-") as profile:
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()

        def wire_pipes() -> None:  # runs in the child before exec
            read_end, write_end = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        command = [executable, *_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # our other descriptors are non-inheritable (PEP 446)
            # The protocol's pipes must be exactly fds 3 and 4; only a pre-exec hook can do that.
            preexec_fn=wire_pipes,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        tools = _DevTools(to_browser_write, from_browser_read, deadline)
        try:
            yield tools
        finally:
            with contextlib.suppress(Exception):
                tools.send("Browser.close", {})
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            os.close(to_browser_write)
            os.close(from_browser_read)


class _DevTools:
    """A minimal Chrome DevTools Protocol client over the two pipes."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float):
        self._write_fd = write_fd
        self._read_fd = read_fd
        self._deadline = deadline
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self.errors: list[str] = []

    # -- transport
    def send(self, method: str, params: dict[str, Any], session: str | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        payload = json.dumps(message).encode() + b"\0"
        while payload:
            written = os.write(self._write_fd, payload)
            payload = payload[written:]
        return self._next_id

    def _pump(self, wait: float) -> None:
        """Read what arrives within ``wait`` seconds and file replies and events."""
        ready, _, _ = select.select([self._read_fd], [], [], max(wait, 0.0))
        if not ready:
            return
        chunk = os.read(self._read_fd, 1 << 20)
        if not chunk:
            raise BrowserError("Chromium closed the DevTools pipe")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            if "id" in message:
                self._replies[message["id"]] = message
            else:
                self._on_event(message)

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise BrowserError("the browser check ran out of time")
        return left

    def call(self, method: str, params: dict[str, Any], session: str | None = None) -> dict:
        request = self.send(method, params, session)
        while request not in self._replies:
            self._pump(min(self._remaining(), 0.5))
        reply = self._replies.pop(request)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def settle(self, seconds: float) -> None:
        """Keep reading events for ``seconds`` (late console messages, frame loads)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._pump(min(left, self._remaining()))

    # -- events
    def _on_event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught exception: {description} ({details.get('url', '')})")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])
            )
            self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") else ""
            self.errors.append(f"{entry.get('source', 'log')} error: {entry.get('text')}{where}")
        elif method == "Target.attachedToTarget":
            # A frame in its own process (or a worker): watch it too, then let it run.
            child = params["sessionId"]
            for domain in ("Runtime.enable", "Log.enable", "Runtime.runIfWaitingForDebugger"):
                self.send(domain, {}, child)
        self._events.append(message)

    def wait_for_event(self, method: str, session: str) -> dict[str, Any]:
        while True:
            for index, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(index)
            self._pump(min(self._remaining(), 0.5))

    # -- page helpers
    def open_page(self, viewport: tuple[int, int]) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(method, {}, session)
        self.call(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True},
            session,
        )
        width, height = viewport
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        return session

    def evaluate(self, expression: str, session: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"evaluating {expression[:60]!r} failed: {text}")
        return result.get("result", {}).get("value")

    def wait_until(
        self, expression: str, session: str, *, limit: float = 15.0, fail_ok: bool = False
    ) -> Any:
        """Poll ``expression`` until it is truthy; return its value (None on time-out if
        ``fail_ok``)."""
        end = time.monotonic() + limit
        while True:
            value = self.evaluate(expression, session)
            if value:
                return value
            if time.monotonic() > end:
                if fail_ok:
                    return None
                raise BrowserError(f"timed out waiting for {expression[:80]!r}")
            self.settle(0.1)
