"""Secrets out of everything a run logs or stores.

A URL may carry credentials: user info (``https://user:pass@host/``) and query tokens
(``?token=...``, pre-signed ``X-Amz-Signature=...``). Every place that logs, tags, writes a manifest,
a listing or a config file passes URLs (or text that may hold them) through :func:`redact_url` /
:func:`redact_text`, so a planted password is found nowhere but in the user's own command line.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

#: Query parameters whose values are secrets (matched case-insensitively, as substrings).
SECRET_QUERY_KEYS = ("token", "secret", "password", "passwd", "signature", "credential", "key", "auth", "sig")

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# a URL runs to whitespace, a quote or a bracket, or to a comma that starts the next URL (Hydra's
# sweep lists: ``base_url=http://u:p@a/,http://u:p@b/``)
_URL_RE = re.compile(_SCHEME + r"(?:(?!," + _SCHEME + r")[^\s'\"<>])+")
# The same URLs as Hydra writes them in overrides (``http\://user\:pw@host/?token\=x``): ``:`` and
# ``=`` escaped with a backslash, so the plain URL pattern above does not see them.
_ESCAPED_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*\\:/{2})([^\s/@'\"<>]+)@")
_ESCAPED_QUERY_RE = re.compile(
    r"([?&][A-Za-z0-9_.\-]*(?:" + "|".join(SECRET_QUERY_KEYS) + r")[A-Za-z0-9_.\-]*\\=)([^&\s'\"<>#]+)",
    re.IGNORECASE,
)


def _secret_key(name: str) -> bool:
    n = name.lower()
    return any(k in n for k in SECRET_QUERY_KEYS)


def redact_url(url: str) -> str:
    """``url`` with its password (or whole user info) and secret query values replaced by ``***``.

    >>> redact_url("https://user:pa55@host:8443/data?token=abc&symbol=BTC")
    'https://***@host:8443/data?token=***&symbol=BTC'
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # not a parsable URL: mask everything between the scheme and the host
        return re.sub(r"://[^/@]*@", f"://{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_key(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _secret_key(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted (log lines, error messages, YAML dumps, Hydra's escaped
    overrides)."""
    if not isinstance(text, str) or ":/" not in text:
        return text
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    if "\\:" in text:
        text = _ESCAPED_USERINFO_RE.sub(lambda m: f"{m.group(1)}{MASK}@", text)
        text = _ESCAPED_QUERY_RE.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return text


def redact(obj: Any) -> Any:
    """Strings anywhere in a nested dict/list structure redacted (configs, manifests, listings)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj
