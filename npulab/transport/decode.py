"""Remote output is bytes: decode it on purpose.

Shells are opened with code page 65001, so well-behaved programs write UTF-8. Some Windows tools
write in the OEM code page whatever the console says (936/GBK on Chinese Windows, 437/850 on
Western ones): :func:`decode_output` tries strict UTF-8 first and then the host's OEM code page.
PowerShell writes errors to stderr as CLIXML (``#< CLIXML`` + ``<Objs>``); :func:`clixml_to_text`
turns that back into the error text.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET

CLIXML_PREFIX = "#< CLIXML"
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def codec_for(codepage: int | None) -> str | None:
    """The Python codec of a Windows code page (``936`` -> ``cp936``), None when unknown."""
    if codepage is None:
        return None
    name = "utf-8" if codepage == 65001 else f"cp{codepage}"
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return name


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_output(data: bytes, oem_codepage: int | None) -> str:
    """UTF-8 when the bytes are valid UTF-8, else the OEM code page (cp437 if that is unknown)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    codec = codec_for(oem_codepage) or "cp437"
    return data.decode(codec, errors="replace")


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def clixml_to_text(text: str) -> str:
    """The error stream of a CLIXML document as plain text; other text is returned unchanged.

    Only ``<S S="Error">`` records are kept (progress and verbose records are dropped), the
    ``_xHHHH_`` escapes are undone, and text before the CLIXML marker is kept.
    """
    start = text.find(CLIXML_PREFIX)
    if start < 0:
        return text
    before = text[:start]
    body = text[start + len(CLIXML_PREFIX) :].lstrip("\r\n")
    docs = [d for d in re.split(r"(?=<Objs\b)", body) if d.strip()]
    lines: list[str] = []
    for doc in docs:
        end = doc.rfind("</Objs>")
        try:
            root = ET.fromstring(doc[: end + len("</Objs>")] if end >= 0 else doc)
        except ET.ParseError:
            return text
        for node in root.iter():
            if node.tag.endswith("}S") and node.get("S") == "Error" and node.text:
                lines.append(_unescape(node.text))
    return before + "".join(lines).replace("\r\n", "\n").rstrip("\n") + ("\n" if lines else "")
