"""Black-box smoke checks for a running Squall (or any atproto PDS): ``python -m smoke --base-url URL``.

The suite only talks HTTP(S) and WebSocket to the server, so it runs the same against a local
process, a LAN box or a deployment behind Caddy. It imports the protocol core (``squall.atproto``)
to parse CARs and verify commit signatures, so it needs nothing beyond the project's test
dependencies. See smoke/README.md for the checks and how identity is resolved.
"""
