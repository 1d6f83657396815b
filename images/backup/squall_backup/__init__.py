"""Squall backup sidecar: verified, encrypted SQLite snapshots of the PDS volume to S3/R2 or a directory.

The only interface with the PDS is the data volume (see the volume contract in the architecture notes):
``pds.sqlite`` (WAL), ``blobs/<did>/<cid>``, ``secrets/`` and this sidecar's own ``backups/``.
"""

__version__ = "0.1.0"
