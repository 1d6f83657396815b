"""Names that no one may take as the first label of a handle on this server's own domains.

They could pass for the operator or the service (``admin``, ``support``), for infrastructure
(``www``, ``mail``, ``ns1``) or for protocol paths (``xrpc``, ``well-known``). The list is ours and
deliberately short; an operator who needs one of them can rename the account later.
"""

from __future__ import annotations

RESERVED_NAMES: frozenset[str] = frozenset(
    {
        # the operator and the service
        "admin", "administrator", "root", "sysadmin", "superuser", "operator", "owner", "staff",
        "moderator", "mod", "mods", "moderation", "support", "help", "helpdesk", "security",
        "abuse", "postmaster", "hostmaster", "webmaster", "noreply", "no-reply", "info",
        "contact", "legal", "privacy", "terms", "tos", "official", "team", "system", "server",
        "service", "services", "status", "billing", "account", "accounts", "signup", "login",
        "logout", "register", "settings", "verify", "verification",
        # infrastructure
        "www", "www1", "www2", "mail", "email", "smtp", "imap", "pop", "pop3", "ftp", "sftp",
        "ssh", "dns", "ns", "ns1", "ns2", "ns3", "ns4", "mx", "vpn", "proxy", "cdn", "static",
        "assets", "media", "img", "images", "files", "download", "downloads", "upload",
        "uploads", "backup", "backups", "api", "dev", "test", "staging", "prod", "production",
        "localhost", "local", "internal", "intranet", "gateway", "router", "caddy",
        # the protocol and its services
        "atproto", "at", "xrpc", "pds", "plc", "did", "bsky", "bluesky", "appview",
        "relay", "bgs", "firehose", "feed", "feeds", "labeler", "ozone", "chat", "oauth",
        "well-known", "_atproto", "handle", "handles", "squall",
    }
)


def is_reserved(name: str) -> bool:
    return name.lower() in RESERVED_NAMES
