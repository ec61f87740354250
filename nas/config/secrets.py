"""Secrets never printed or written: passwords in storage URLs.

``mask_url`` takes a storage URL, or any text holding URLs (an argv entry such as
``--storage=postgresql://...``, a driver's error message), and replaces every password with
``***``: the one after ``user:`` (up to the *last* ``@`` of the authority, so a password holding a
raw ``/`` or ``@`` is masked whole) and any ``password``-like query parameter
(``postgresql://u@host/db?password=...``, which libpq accepts). The result is what SQLAlchemy's
``make_url(url).render_as_string(hide_password=True)`` shows, with the query password masked
too (SQLAlchemy leaves the query as it is); text without a URL passes unchanged. It never raises.

SQLAlchemy's own parser is not used for the masking itself: it ends the password at the *first*
``@`` (``u:p@ss@host`` is password ``p`` at host ``ss@host``), so its ``hide_password`` would
show the rest of such a password.
"""
from __future__ import annotations

import re

from nas.config.errors import ConfigError

__all__ = ["mask_url", "check_url", "MASK"]

MASK = "***"
# scheme://rest, the rest up to whitespace; trailing quotes and brackets belong to the text around it
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")
_TRAILING = "'\"`)]}>,;:."
# key=value pairs whose key names a password (password, passwd, sslpassword, pwd), in a query or free text
_SECRET_PARAM = re.compile(r"(?i)(\b\w*(?:password|passwd|pwd)\w*=)([^&\s'\"]*)")


def _mask_one(url: str) -> str:
    body = url.rstrip(_TRAILING)
    tail = url[len(body):]
    scheme, _, rest = body.partition("://")
    query_at = rest.find("?")
    at = rest.rfind("@", 0, query_at if query_at >= 0 else len(rest))
    if at < 0:
        at = rest.rfind("@")  # a raw "?" in the password (or an "@" in the query: masked too, to be safe)
    if at >= 0 and ":" in rest[:at]:  # user:password@host, the password up to the last "@"
        rest = rest[:rest.index(":")] + ":" + MASK + rest[at:]
    head, question, query = rest.partition("?")
    if question:
        query = _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, query)
    return f"{scheme}://{head}{question}{query}{tail}"


def mask_url(text: str) -> str:
    """``text`` with every password of a URL in it replaced by ``***``.

    ``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``;
    ``postgresql://user@host/db?password=secret`` -> ``postgresql://user@host/db?password=***``;
    ``journal:runs/x/study.journal`` and other text without a URL -> unchanged.
    """
    if not isinstance(text, str):
        return text
    try:
        masked = _URL.sub(lambda m: _mask_one(m.group(0)), text)
        return _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, masked)  # password=... outside a URL too
    except Exception:  # noqa: BLE001 -- never raise; mask everything that could hold a secret instead
        return re.sub(r"://\S*", "://" + MASK, text)


def check_url(url: str, what: str = "--storage") -> None:
    """Refuse a database URL whose password holds a raw ``@``.

    SQLAlchemy ends the password at the first ``@``, so ``u:p@ss@host`` would connect to the host
    ``ss@host``, and the driver's error would print that part of the password. Percent-encoded
    (``p%40ss``) it works. A raw ``/`` is fine (SQLAlchemy reads the password up to the ``@``).

    Raises:
        ConfigError: naming the URL with its password masked.
    """
    scheme, sep, rest = url.partition("://")
    head = rest.split("?", 1)[0]
    if sep and head.count("@") > 1 and ":" in head[:head.rfind("@")]:
        raise ConfigError(f"{what} {mask_url(url)!r}: the password holds a raw '@' (or the URL has two '@'); "
                          "write it percent-encoded: '@' as %40 (and '/' as %2F, ':' as %3A)")
