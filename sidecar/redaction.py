"""Keeps credentials out of everything promgate stores or exports.

Two tools, used wherever text from outside reaches the ledger, a log line, an API
answer or a span: :func:`strip_userinfo` drops ``user:password@`` from a URL, and
:func:`redact` masks given secrets and any URL userinfo inside free text (e.g. an error
message about to be audited). Every mask is :data:`REDACTED`. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from yarl import URL

REDACTED = "<redacted>"

# scheme://userinfo@ : the userinfo runs up to the last "@" before the path, query or fragment
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s\"'<>]*@")


def strip_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part; other text is returned unchanged."""
    return _URL_USERINFO.sub(r"\1", url)


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries a user name or password in its authority."""
    return _URL_USERINFO.search(url) is not None


def credential_forms(url: URL) -> set[str]:
    """``url``'s user and password as sent and as decoded: what to :func:`redact` from text
    that may quote the URL."""
    forms = {url.raw_user, url.raw_password, url.user, url.password}
    return {form for form in forms if form}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's userinfo removed and every non-empty secret masked."""
    text = strip_userinfo(text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
