"""Container health check: GET /xrpc/_health on the port the PDS listens on.

The port is Railway's PORT when set, else PDS_PORT, else 2583 (the same rule as squall.config).
Exit 0 when the PDS answers 200, 1 otherwise. Standard library only: the image has no curl.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("PORT") or os.environ.get("PDS_PORT") or "2583"
    url = f"http://127.0.0.1:{port}/xrpc/_health"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            if response.status == 200:
                return 0
            print(f"unhealthy: {url} answered {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
