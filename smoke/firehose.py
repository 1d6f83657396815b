"""The firehose as a client sees it: ``com.atproto.sync.subscribeRepos`` over ws/wss
(https://atproto.com/specs/event-stream, https://atproto.com/specs/sync).

``open_stream`` opens the WebSocket (the upgrade is the first thing a relay needs). ``Watch``
subscribes before the write checks run and keeps only the frames about one repository, so a
busy live stream cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable

import websockets

from squall.firehose.frames import FrameError, decode_frame

PATH = "/xrpc/com.atproto.sync.subscribeRepos"
MAX_FRAME = 8 * 1024 * 1024  # a #commit carries at most ~2 MB of blocks; leave room, not gigabytes
KEEP = 1000


def stream_url(ws_base: str, cursor: int | None) -> str:
    return ws_base + PATH + (f"?cursor={cursor}" if cursor is not None else "")


async def open_stream(url: str, context: ssl.SSLContext | None) -> websockets.ClientConnection:
    """Connect; the caller's time bound covers the upgrade (no separate open timeout)."""
    tls = {"ssl": context} if url.startswith("wss://") and context is not None else {}
    return await websockets.connect(
        url,
        **tls,
        open_timeout=None,
        max_size=MAX_FRAME,
        proxy=None,
        user_agent_header="squall-smoke/1",
    )


def decode(message: Any) -> tuple[dict, dict]:
    if not isinstance(message, bytes):
        raise FrameError(f"a text message instead of a binary frame: {str(message)[:80]!r}")
    return decode_frame(message)


class Watch:
    """A live subscription that remembers the frames whose body names ``did``."""

    def __init__(self, url: str, context: ssl.SSLContext | None) -> None:
        self.url = url
        self.context = context
        self.did: str | None = None
        self.frames: list[tuple[dict, dict]] = []
        self.error: str | None = None
        self._ws: websockets.ClientConnection | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._ws = await open_stream(self.url, self.context)
        self._task = asyncio.create_task(self._read(), name="smoke-firehose-watch")

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                header, body = decode(message)
                if header.get("op") == -1:
                    self.error = f"error frame {body.get('error')}: {body.get('message')}"
                    break
                if self.did is not None and self.did in (body.get("repo"), body.get("did")):
                    if len(self.frames) < KEEP:
                        self.frames.append((header, body))
                self._changed.set()
        except websockets.ConnectionClosed as exc:
            self.error = f"the stream closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except FrameError as exc:
            self.error = f"an undecodable frame: {exc}"
        finally:
            self._changed.set()

    async def wait_for(self, match: Callable[[dict, dict], bool]) -> tuple[dict, dict]:
        """The first remembered frame that matches; the caller bounds the wait."""
        while True:
            for header, body in self.frames:
                if match(header, body):
                    return header, body
            if self.error is not None:
                raise ConnectionError(self.error)
            self._changed.clear()
            await self._changed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ws is not None:
            try:
                async with asyncio.timeout(2):
                    await self._ws.close()
            except (TimeoutError, OSError, websockets.WebSocketException):
                pass
