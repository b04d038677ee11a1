"""Headless Chromium for the browser tests: the machine's own (Debian's, never a downloaded one),
reaching loopback only, with every script error on the page failing the test."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.async_api import Page, Request, Response, Route, async_playwright

#: How the machine's own Chromium runs here: headless, and nothing beyond loopback.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Browsed:
    """The page, every URL it requested, and the loads that failed (4xx/5xx, not a favicon)."""

    page: Page
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@asynccontextmanager
async def loopback_page(*, refuse_failed_loads: bool = False) -> AsyncIterator[Browsed]:
    """A page whose requests beyond 127.0.0.1 are aborted; on leaving, any such request, script
    error or console error fails the test (and, with ``refuse_failed_loads``, a failed load:
    off where a test provokes an error response on purpose)."""
    outside: list[str] = []
    errors: list[str] = []

    async def loopback_only(route: Route, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme in {"data", "about", "blob"} or url.hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(request.url)
            await route.abort()

    def failed(response: Response) -> None:
        if response.status >= 400 and urlsplit(response.url).path != "/favicon.ico":
            seen.failed.append(f"{response.status} {response.url}")

    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1200, "height": 900})
        await context.route("**/*", loopback_only)
        opened = await context.new_page()
        seen = Browsed(opened)
        opened.on("request", lambda request: seen.requests.append(request.url))
        opened.on("response", failed)
        opened.on("pageerror", lambda error: errors.append(str(error)))
        # Chromium logs each non-2xx response as an error; those are judged above instead.
        opened.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        try:
            yield seen
        finally:
            await browser.close()
    assert outside == [], f"requests beyond loopback: {outside}"
    assert errors == [], f"errors on the page: {errors}"
    if refuse_failed_loads:
        assert seen.failed == [], f"failed loads: {seen.failed}"
