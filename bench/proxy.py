"""Proxy benchmark (issue #6): what service proxying adds to a call.

    .venv/bin/python bench/proxy.py [--calls 1000] [--mints 5000]

1. In process: service-auth JWTs minted (and verified) per second, ES256K and ES256.
2. Over HTTP, one request at a time on a kept-alive connection: a GET answered by a fake AppView
   directly (the baseline, without a token check), and the same GET through ``squall serve``
   (token minted with the account key, forwarded, verified by the fake against the user's DID
   document from the PLC double, answer streamed back). Reports requests per second and p50/p99.
   The fake fetches the issuer's document from the PLC double on every call, in both runs, so
   the difference between the two lines is what the PDS adds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import httpx

from _server import ROOT, bench_server

sys.path.insert(0, str(ROOT / "images" / "pds"))

from squall.atproto.crypto import P256Keypair, Secp256k1Keypair  # noqa: E402
from squall.auth.service_jwt import create_service_jwt, verify_service_jwt  # noqa: E402
from tests.helpers.fake_services import start_service  # noqa: E402
from tests.helpers.plc import PlcDirectoryDouble  # noqa: E402

NSID = "app.bsky.feed.getTimeline"


def bench_mint(n: int) -> None:
    for cls in (Secp256k1Keypair, P256Keypair):
        key = cls.generate()
        started = time.perf_counter()
        tokens = [create_service_jwt(key, iss="did:plc:benchaaaaaaaaaaaaaaaaaaa", aud="did:web:a.example", lxm=NSID)
                  for _ in range(n)]
        minted = n / (time.perf_counter() - started)

        async def get_key(did, fresh, public=key.public_key):
            return public

        async def verify_all():
            for token in tokens:
                await verify_service_jwt(token, audience="did:web:a.example", lxm=NSID, get_key=get_key)

        started = time.perf_counter()
        asyncio.run(verify_all())
        verified = n / (time.perf_counter() - started)
        print(f"{key.jwt_alg:7s} mint {minted:9.0f}/s   verify {verified:9.0f}/s")


def timed(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.get(url, headers=headers)
        out.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
    return out


def report(name: str, times: list[float]) -> None:
    times = sorted(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{name:28s} {len(times) / sum(times):8.0f} req/s   p50 {statistics.median(times) * 1000:6.2f} ms"
          f"   p99 {p99 * 1000:6.2f} ms")


def bench_http(calls: int) -> None:
    with PlcDirectoryDouble() as plc:
        appview = start_service(plc, "appview", "bsky_appview", "BskyAppView")
        env = {**plc.pds_env(), "PDS_BSKY_APP_VIEW_URL": appview.url, "PDS_BSKY_APP_VIEW_DID": appview.did}
        try:
            with bench_server("squall-bench-proxy-", env=env) as pds, pds.client() as c:
                r = c.post("/xrpc/com.atproto.server.createAccount",
                           json={"handle": "bench.localhost", "email": "b@example.com", "password": "bench-pass-123"})
                assert r.status_code == 200, r.text
                token = r.json()["accessJwt"]
                with httpx.Client(timeout=10) as direct:
                    # The fake refuses a request without a valid token, so the baseline uses one
                    # fresh token per call minted the same way (its cost is part of neither number).
                    timed(c, f"/xrpc/{NSID}", {"authorization": f"Bearer {token}"}, 50)  # warm up
                    proxied = timed(c, f"/xrpc/{NSID}", {"authorization": f"Bearer {token}"}, calls)
                    appview.reset()
                    baseline = []
                    for _ in range(calls):
                        r = c.get("/xrpc/com.atproto.server.getServiceAuth",
                                  params={"aud": appview.did, "lxm": NSID},
                                  headers={"authorization": f"Bearer {token}"})
                        service_token = r.json()["token"]
                        started = time.perf_counter()
                        r = direct.get(f"{appview.url}/xrpc/{NSID}", headers={"authorization": f"Bearer {service_token}"})
                        baseline.append(time.perf_counter() - started)
                        assert r.status_code == 200, r.text
                    assert appview.jwt_errors() == []
                report("fake AppView directly", baseline)
                report("through squall (proxied)", proxied)
        finally:
            appview.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--mints", type=int, default=5000)
    args = parser.parse_args()
    bench_mint(args.mints)
    bench_http(args.calls)


if __name__ == "__main__":
    main()
