"""The PDS version, reported by /xrpc/_health, describeServer and the admin status."""

from importlib.metadata import PackageNotFoundError, version as _dist_version

try:
    __version__ = _dist_version("squall")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
