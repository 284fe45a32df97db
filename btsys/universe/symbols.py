"""Candidate symbols: ``data.symbols`` as a list, where an entry ``file:PATH`` stands for the
symbols listed in that file (one per line; blank lines and ``#`` comments ignored).

The file is read once, when the run starts (:func:`resolve_symbols`), and replaced by its symbols
in the config, so cache keys, MLflow params and ``config.yaml`` carry the symbols themselves, not
the path: editing the file changes the run's keys.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from btsys.data.binance import SYMBOL_RE

FILE_PREFIX = "file:"


def read_symbols_file(path: str) -> list[str]:
    """The symbols of a symbols file, validated; errors name the file and line."""
    if not os.path.isfile(path):
        raise ValueError(
            f"data.symbols: symbols file {path!r} not found (relative paths are from the working "
            f"directory {os.getcwd()!r})"
        )
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            if not SYMBOL_RE.match(s):
                raise ValueError(
                    f"{path} line {n}: invalid symbol {s!r}: must match {SYMBOL_RE.pattern} "
                    "(one upper-case symbol per line, # starts a comment)"
                )
            out.append(s)
    if not out:
        raise ValueError(f"data.symbols: symbols file {path!r} lists no symbols")
    return out


def expand_symbols(entries: Iterable[str]) -> list[str]:
    """``data.symbols`` with every ``file:PATH`` entry replaced by the file's symbols, in order.

    Raises ``ValueError`` on an invalid symbol or a symbol listed twice (naming both places).
    """
    out: list[str] = []
    seen: dict[str, str] = {}
    for entry in entries:
        entry = str(entry)
        if entry.startswith(FILE_PREFIX):
            path = entry[len(FILE_PREFIX) :]
            items = [(s, f"{path}") for s in read_symbols_file(path)]
        else:
            if not SYMBOL_RE.match(entry):
                raise ValueError(
                    f"data.symbols: invalid symbol {entry!r}: must match {SYMBOL_RE.pattern}, "
                    f"or be {FILE_PREFIX}PATH for a file of symbols"
                )
            items = [(entry, "data.symbols")]
        for s, where in items:
            if s in seen:
                raise ValueError(f"data.symbols: {s!r} is listed twice (in {seen[s]} and in {where})")
            seen[s] = where
            out.append(s)
    return out


def resolve_symbols(cfg: Any) -> None:
    """Replace ``file:`` entries of ``cfg.data.symbols`` by the file's symbols (in place; idempotent)."""
    data = cfg.get("data") if hasattr(cfg, "get") else getattr(cfg, "data", None)
    if data is None:
        return
    entries = list(data.get("symbols") or [])
    if any(str(e).startswith(FILE_PREFIX) for e in entries):
        data.symbols = expand_symbols(entries)
