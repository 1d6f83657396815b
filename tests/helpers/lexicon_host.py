"""A loopback "lexicon host": a did:web identity whose PDS publishes lexicon schema records, as the
lexicon resolution of https://atproto.com/specs/lexicon describes (DID document with an
``#atproto_pds`` service, ``com.atproto.repo.getRecord`` of ``com.atproto.lexicon.schema``).
The PDS under test reaches it through ``PDS_DEV_LEXICON_AUTHORITIES`` (namespace → this DID)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .net import ThreadedServer, free_port


class LexiconHost:
    def __init__(self) -> None:
        self.port = free_port()
        self.lexicons: dict[str, dict[str, Any]] = {}
        self.record_hits = 0

        async def did_doc(request: Request) -> Response:
            return JSONResponse({"@context": ["https://www.w3.org/ns/did/v1"], "id": self.did,
                                 "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                              "serviceEndpoint": self.base}]})

        async def get_record(request: Request) -> Response:
            self.record_hits += 1
            q = request.query_params
            doc = self.lexicons.get(q.get("rkey", ""))
            if q.get("repo") != self.did or q.get("collection") != "com.atproto.lexicon.schema" or doc is None:
                return JSONResponse({"error": "RecordNotFound", "message": "Could not locate record"}, 400)
            return JSONResponse({"uri": f"at://{self.did}/com.atproto.lexicon.schema/{q['rkey']}",
                                 "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
                                 "value": {"$type": "com.atproto.lexicon.schema", **doc}})

        app = Starlette(routes=[Route("/.well-known/did.json", did_doc),
                                Route("/xrpc/com.atproto.repo.getRecord", get_record)])
        self._server = ThreadedServer(app, self.port, name="lexicon-host")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def did(self) -> str:
        return "did:web:" + quote(f"127.0.0.1:{self.port}", safe=".")

    def permission_set(self, nsid: str, permissions: list[dict[str, Any]], *, title: str,
                       detail: str = "") -> None:
        self.lexicons[nsid] = {"lexicon": 1, "id": nsid, "defs": {"main": {
            "type": "permission-set", "title": title, "detail": detail, "permissions": permissions}}}

    def __enter__(self) -> "LexiconHost":
        self._server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.stop()
