"""XRPC: the registry, the dispatcher and one module per namespace."""
