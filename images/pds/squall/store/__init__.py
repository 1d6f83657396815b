"""The store layer: the one SQLite database that holds all PDS state, and the only code that
speaks SQL (see docs/ARCHITECTURE.md).

One module per table family — ``accounts``, ``sessions``, ``tokens``, ``invites``,
``preferences``, ``repos``, ``blobs``, ``sequencer`` (the event log), ``identity`` (the DID cache),
``oauth`` — plus ``db`` (connections, the writer thread) and ``migrations`` (the schema).
"""
