"""A tiny Chrome DevTools Protocol client (aiohttp's websocket) for headless Chromium screenshots."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp


class Browser:
    """``chromium --headless`` with a remote-debugging port; one page."""

    def __init__(self, port: int, profile: str, size: str = "1600,1000") -> None:
        self.port = port
        self.proc = subprocess.Popen(
            ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--remote-debugging-port={port}", f"--window-size={size}", f"--user-data-dir={profile}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.n = 0

    async def __aenter__(self) -> Browser:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=1) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        self.proc.wait(10)

    async def call(self, method: str, **params: object) -> dict:
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") == self.n:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise RuntimeError("the browser closed the connection")

    async def js(self, expr: str) -> object:
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        return r.get("result", {}).get("value")

    async def goto(self, url: str, ready: str, timeout: float = 60) -> None:
        """Open ``url`` and wait until the JavaScript expression ``ready`` is true."""
        await self.call("Page.navigate", url=url)
        await self.until(ready, timeout)

    async def until(self, expr: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await self.js(f"!!({expr})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout} s: {expr}")
            await asyncio.sleep(0.5)

    async def shot(self, path: str | Path, settle: float = 2.0) -> None:
        await asyncio.sleep(settle)  # charts animate in
        r = await self.call("Page.captureScreenshot", format="png")
        Path(path).write_bytes(base64.b64decode(r["data"]))
