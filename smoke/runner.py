"""Running checks: each one bounded in time, timed, and turned into one line of the report.

A check is ``async def check(ctx) -> str | None`` (the text is a short note for a pass). It fails by
raising ``CheckFailed`` (expected vs seen), skips by raising ``Skipped``; any other error becomes a
failure that names what the check was doing (``ctx.doing``), so a hang or a refused connection
reads as "while waiting for …" instead of a bare traceback.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable

import httpx
import websockets

PASS, FAIL, SKIP = "pass", "fail", "skip"


class CheckFailed(Exception):
    """The server answered, but not as it should: says what was expected and what was seen."""

    def __init__(self, expected: str, seen: str) -> None:
        self.expected = expected
        self.seen = seen
        super().__init__(f"expected {expected}; saw {seen}")


class Skipped(Exception):
    """The check does not apply (missing option, missing prerequisite)."""


@dataclass
class Outcome:
    name: str
    status: str
    seconds: float
    detail: str = ""


Check = Callable[[Any], Awaitable[str | None]]


def describe_error(exc: BaseException) -> str:
    """A one-line account of a transport error (the exception types say more than their text)."""
    if isinstance(exc, websockets.InvalidStatus):
        return f"HTTP {exc.response.status_code} instead of 101 Switching Protocols"
    if isinstance(exc, ssl.SSLError) or isinstance(getattr(exc, "__cause__", None), ssl.SSLError):
        return f"TLS error: {exc}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


async def run_check(name: str, check: Check, ctx: Any, timeout: float) -> Outcome:
    ctx.doing("starting")
    started = time.perf_counter()
    status, detail = PASS, ""
    try:
        async with asyncio.timeout(timeout):
            detail = await check(ctx) or ""
    except CheckFailed as exc:
        status, detail = FAIL, str(exc)
    except Skipped as exc:
        status, detail = SKIP, str(exc)
    except (TimeoutError, httpx.TimeoutException):
        status, detail = FAIL, f"no result within {timeout:g}s while {ctx.step}"
    except (httpx.HTTPError, websockets.WebSocketException, OSError) as exc:
        status, detail = FAIL, f"{describe_error(exc)} (while {ctx.step})"
    except Exception as exc:  # a bug in the check or a malformed answer it did not foresee
        status, detail = FAIL, f"unexpected {describe_error(exc)} (while {ctx.step})"
    return Outcome(name, status, round(time.perf_counter() - started, 3), detail)


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {s: sum(o.status == s for o in outcomes) for s in (PASS, FAIL, SKIP)}


def summary_line(outcomes: list[Outcome]) -> str:
    n = counts(outcomes)
    line = f"{n[PASS]} passed, {n[FAIL]} failed"
    return line + (f", {n[SKIP]} skipped" if n[SKIP] else "")


def text_report(outcomes: list[Outcome], base_url: str) -> str:
    width = max((len(o.name) for o in outcomes), default=10)
    lines = [f"smoke checks against {base_url}"]
    for o in outcomes:
        line = f"{o.status.upper():4}  {o.name:<{width}}  {o.seconds:7.3f}s"
        lines.append(f"{line}  {o.detail}" if o.detail else line)
    lines.append(summary_line(outcomes))
    return "\n".join(lines)


def json_report(outcomes: list[Outcome], base_url: str) -> str:
    n = counts(outcomes)
    return json.dumps({
        "baseUrl": base_url,
        "ok": n[FAIL] == 0,
        "passed": n[PASS],
        "failed": n[FAIL],
        "skipped": n[SKIP],
        "checks": [asdict(o) for o in outcomes],
    }, indent=2)
