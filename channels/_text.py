"""Text that came from the network or a product, made safe to show on a terminal, in a log
line or in a page: control characters (escape sequences, a newline that would forge a log
line) are written as escapes, and the length is bounded."""

__all__ = ["printable"]


def printable(text: str, limit: int = 300) -> str:
    r"""`text` on one line, every control character escaped (`\x1b`, `\n`) and backslashes
    doubled, cut to `limit` characters with an ellipsis."""
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c.isprintable():
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    said = "".join(out)
    return said if len(said) <= limit else said[:limit - 1] + "…"
