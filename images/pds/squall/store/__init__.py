"""The store layer: the one SQLite database that holds all PDS state, and the only code that
speaks SQL (see docs/ARCHITECTURE.md).

One module per table family (docs/ARCHITECTURE.md lists each module's tables) — ``accounts``,
``sessions``, ``tokens``, ``invites``, ``preferences``, ``reserved_keys``, ``repos``, ``imports``,
``blobs``, ``sequencer`` (the event log), ``identity`` (the DID cache), ``relays``, ``oauth``,
``mail``, ``admin_sessions``, ``account_sessions`` — plus ``db`` (connections, the writer thread)
and ``migrations`` (the schema).
"""
