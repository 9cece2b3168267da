"""PowerShell script checks with tree-sitter-powershell: syntax errors and string literals."""

from __future__ import annotations

import re

import tree_sitter
import tree_sitter_powershell

PS = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def _nodes(text: str) -> list[tree_sitter.Node]:
    out = []
    stack = [PS.parse(text.encode()).root_node]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children)
    return out


def bad_nodes(text: str) -> list[str]:
    """ERROR and missing nodes (empty for a script that parses cleanly)."""
    return [
        f"{n.type} at {n.start_point}" for n in _nodes(text) if n.type == "ERROR" or n.is_missing
    ]


def string_values(text: str) -> list[str]:
    """The values of every single-quoted (verbatim) string literal, as PowerShell reads them,
    in document order."""
    out = []
    for node in sorted(_nodes(text), key=lambda n: n.start_byte):
        if node.type == "verbatim_string_characters" and node.text is not None:
            raw = node.text.decode()
            # Any two single-quote characters (ASCII or typographic) in a row stand for one.
            out.append(
                re.sub(
                    "([\u0027\u2018\u2019\u201a\u201b])[\u0027\u2018\u2019\u201a\u201b]",
                    r"\1",
                    raw[1:-1],
                )
            )
    return out
