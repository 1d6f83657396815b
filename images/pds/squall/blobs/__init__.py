"""Blobs: the stores (disk, S3), record references, the service and its garbage collector.

The XRPC methods and the feature-module hooks are in ``squall.xrpc.blobs``.
"""

from .refs import find_blob_refs, link_record_blobs, unlink_record_blobs
from .service import BlobService
from .store import BlobNotFoundError, BlobStore, BlobStoreError

__all__ = ["BlobNotFoundError", "BlobService", "BlobStore", "BlobStoreError", "find_blob_refs",
           "link_record_blobs", "unlink_record_blobs"]
