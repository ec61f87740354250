"""Secrets never printed or written: passwords in storage URLs."""
from __future__ import annotations

import re


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)
