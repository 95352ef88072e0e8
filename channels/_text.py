"""Text that came from the network or a product, made safe to show on a terminal, in a log
line or in a page: control characters (escape sequences, a newline that would forge a log
line) are written as escapes, and the length is bounded."""

__all__ = ["printable", "terminal_lines"]


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


def terminal_lines(text: str, one_line: bool = False) -> str:
    """`text` for a terminal or a log file: every control character escaped (`\x1b`, `\r`)
    and the rest as it is, its own line breaks kept (or, `one_line`, escaped too). The last
    guard of every line the CLIs and the agent write, whatever text reached it (a check's
    summary, a signed halt reason, a product's output). Unlike `printable`, backslashes
    stay single: text already escaped upstream is not escaped twice."""
    return "".join(c if c.isprintable() or (c == "\n" and not one_line)
                   else c.encode("unicode_escape").decode("ascii") for c in text)
