"""Service proxying (https://atproto.com/specs/xrpc, "Service Proxying" and "Inter-Service
Authentication").

A client talks only to its PDS; calls for methods the PDS does not serve are forwarded to the
service that does (the AppView, the chat service, a labeler), with a short service-auth token
signed by the user's repo key in place of the user's own credentials.

* ``methods``: the protected (never proxied) and privileged (no plain app passwords) methods;
* ``target``: the ``atproto-proxy`` header and the configured defaults → a service origin;
* ``forwarder``: header allow-lists, streaming with size and time limits, upstream error mapping;
* ``read_after_write``: the caller's newer posts and profile merged into the AppView's answers;
* ``bsky``: the app.bsky calls with another token than the plain one (custom feeds, push);
* ``service``: ``ProxyService``, attached as ``ctx.proxy``.

The XRPC side (the catch-all and ``com.atproto.server.getServiceAuth``) is ``squall.xrpc.proxy``.
"""

from .forwarder import Forwarder, ProxyLimits, UpstreamError, UpstreamStreamError
from .methods import PRIVILEGED_METHODS, PROTECTED_METHODS, is_privileged, is_protected
from .service import ProxyService
from .target import Target, TargetResolver, parse_proxy_header, service_endpoint

__all__ = [
    "Forwarder",
    "PRIVILEGED_METHODS",
    "PROTECTED_METHODS",
    "ProxyLimits",
    "ProxyService",
    "Target",
    "TargetResolver",
    "UpstreamError",
    "UpstreamStreamError",
    "is_privileged",
    "is_protected",
    "parse_proxy_header",
    "service_endpoint",
]
