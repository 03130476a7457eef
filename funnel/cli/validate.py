"""Checks of the CLI's free-text values (collection names, Qdrant locations), made before any work.

A bad value must fail before anything is loaded, connected or created: a collection name is
also a folder name in qdrant-client's embedded mode, so ``../evil`` would escape the folder, and
a location that is neither a URL nor a folder would be taken for a folder and created.
"""

from __future__ import annotations

import re

from funnel.errors import InputError
from funnel.remote import split_http_url

COLLECTION_RULE = "1-255 letters, digits, '_', '-' or '.', not starting with '.'"
_COLLECTION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+:[0-9]+/?")
QDRANT_FORMS = "http(s)://HOST[:PORT] for a Qdrant server, or a folder for embedded mode"


def collection_name(name: str, option: str = "--collection") -> str:
    """``name`` if it is a safe Qdrant collection name (:data:`COLLECTION_RULE`); InputError otherwise."""
    if not _COLLECTION.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise InputError(f"{option} {shown!r} is not a collection name: use {COLLECTION_RULE}")
    return name


def qdrant_location(location: str, option: str = "--qdrant") -> str:
    """``location`` if it is an http(s) URL with a host, ``:memory:`` or a plain folder path.

    Any other scheme (``ftp://x``) and a bare ``HOST:PORT`` are refused rather than taken for a
    folder of that name.
    """
    if location == ":memory:":
        return location
    if not location.strip():
        raise InputError(f"{option} is empty: give {QDRANT_FORMS}")
    scheme = _SCHEME.match(location)
    if scheme:
        if scheme.group(0) not in ("http://", "https://"):  # the client tells URLs from folders by these exact prefixes
            raise InputError(f"{option} {location!r} is not an http(s) URL: give {QDRANT_FORMS}")
        split_http_url(location, option)
        return location
    if _HOST_PORT.fullmatch(location):
        raise InputError(f"{option} {location!r} looks like HOST:PORT without a scheme: write http://{location.rstrip('/')}")
    return location
