"""Mistakes a user can fix: the CLI prints them as one message (no traceback unless ``--log-level DEBUG``)."""

from __future__ import annotations

from urllib.parse import urlsplit

# fsspec protocols that need an optional package, and the extra of ours that installs it.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}


class UserError(Exception):
    """A problem with what the user asked for (an input, a flag, a file), worded as what to change."""


def require_protocol(uri: str) -> None:
    """Raise a one-line ``UserError`` naming the extra to install when ``uri``'s filesystem is unavailable."""
    import fsspec

    protocol = urlsplit(uri).scheme if "://" in uri else ""
    if protocol in ("", "file"):
        return
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        how = f"pip install 'vde[{extra}]'" if extra else f"install the fsspec backend for '{protocol}://' ({exc})"
        raise UserError(f"{uri}: reading {protocol}:// needs an optional package: {how}") from exc
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise UserError(f"{uri}: unknown storage protocol '{protocol}://' ({exc})") from exc
