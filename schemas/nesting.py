"""A bound on JSON nesting, checked before any parser sees the text (deep nesting recurses)."""

from __future__ import annotations

from pepi_fleet.schemas.errors import PayloadError

MAX_JSON_DEPTH = 32


def check_nesting(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise PayloadError if ``text`` nests arrays/objects deeper than ``max_depth``.

    Brackets inside JSON strings do not count. Linear in the length, no recursion.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return  # too few brackets to nest that deep: no scan (a heartbeat has about ten)
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                raise PayloadError(f"JSON nests deeper than {max_depth} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
