"""supervisord event listener: when a program stops for good, stop the whole container.

supervisord marks a program FATAL once it has failed to start ``startretries`` times in a row, and
then carries on running the others and, when asked to stop, exits 0. On a platform that restarts
only failed containers (Railway's ON_FAILURE) that would leave a PDS without its server for ever.
This listener, subscribed to PROCESS_STATE_FATAL, writes the program's name to a marker file and
sends SIGTERM to supervisord; the image's entrypoint sees the marker after supervisord has stopped
the other programs cleanly and exits non-zero.

Protocol: supervisor's event listener protocol (READY / header line / payload / RESULT).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _tokens(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def main() -> int:
    marker = Path(os.environ.get("SQUALL_FATAL_MARKER", "/tmp/squall-supervisor/fatal"))
    supervisord = os.getppid()
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return 0  # supervisord closed our stdin: it is shutting down
        header = _tokens(line)
        payload = sys.stdin.read(int(header.get("len", "0")))
        if header.get("eventname") == "PROCESS_STATE_FATAL":
            name = _tokens(payload.splitlines()[0] if payload else "").get("processname", "unknown")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(name + "\n")
            print(f"squall: program {name!r} failed for good; stopping the container", file=sys.stderr, flush=True)
            os.kill(supervisord, signal.SIGTERM)
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
