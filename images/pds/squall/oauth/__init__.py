"""atproto OAuth (https://atproto.com/specs/oauth): the PDS as its own authorization server and as
resource server for DPoP-bound access tokens.

Feature module (see squall.app): ``routes`` adds the metadata, PAR, authorization, token and
revocation endpoints and the DPoP request middleware; ``start`` builds the provider and attaches
the DPoP path to the XRPC auth verifier.

Library: joserfc does the JOSE mechanics (JWS/JWT with ES256 and HS256, JWK import, and the
RFC 7638 thumbprints DPoP binding needs, which PyJWT lacks).
"""

from __future__ import annotations

from typing import Any, Callable

from .provider import OAuthProvider
from .resource import DpopRequestMiddleware, ResourceVerifier


def routes(app, get_ctx: Callable[[], Any]) -> None:
    from . import endpoints

    def get_provider() -> OAuthProvider | None:
        try:
            return getattr(get_ctx(), "oauth", None)
        except KeyError:  # before start-up has finished
            return None

    app.add_middleware(DpopRequestMiddleware, get_provider=get_provider)
    endpoints.routes(app, get_ctx)


async def start(ctx) -> None:
    from .lexicons import LexiconResolver, dns_txt_with

    lexicons = LexiconResolver(ctx.settings, ctx.identity.dids.resolve, dns_txt=dns_txt_with(ctx.identity))
    provider = OAuthProvider(settings=ctx.settings, db=ctx.db, hasher=ctx.hasher, jwt_secret=ctx.secrets.jwt_secret,
                             lexicons=lexicons)
    ctx.oauth = provider
    ctx.verifier.attach_dpop(ResourceVerifier(provider))


async def stop(ctx) -> None:
    await ctx.oauth.close()
