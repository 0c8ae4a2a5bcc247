"""Reading PowerShell single-quoted literals back, with PowerShell's rules (for the tests)."""

QUOTES = "'\u2018\u2019\u201a\u201b"  # PowerShell treats all of these as single quotes


def parse_literal(text: str, start: int = 0) -> tuple[str, int]:
    """Read one single-quoted string starting at text[start]; return (value, end)."""
    assert text[start] in QUOTES
    i, out = start + 1, []
    while True:
        ch = text[i]
        if ch in QUOTES:
            if i + 1 < len(text) and text[i + 1] in QUOTES:
                out.append(ch)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1


def literals(script: str) -> list[str]:
    """Every single-quoted literal in a script, in order."""
    out, i = [], 0
    while i < len(script):
        if script[i] in QUOTES:
            value, i = parse_literal(script, i)
            out.append(value)
        else:
            i += 1
    return out
