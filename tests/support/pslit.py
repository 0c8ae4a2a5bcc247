"""Reading PowerShell single-quoted literals back with PowerShell's rules, and splitting the
one-line statements sgpfab's Windows builders generate into a command and its arguments.

PowerShell's tokenizer (tokenizer.cs, CharTraits.IsSingleQuote) takes U+2018, U+2019, U+201A
and U+201B as single quotes too; inside a single-quoted string two quote characters in a row
stand for the first of them, and nothing else is special.
"""

from __future__ import annotations

from dataclasses import dataclass

QUOTES = "'\u2018\u2019\u201a\u201b"


def parse_literal(text: str, start: int = 0) -> tuple[str, int]:
    """Read one single-quoted string starting at text[start]; return (value, end)."""
    assert text[start] in QUOTES
    i, out = start + 1, []
    while True:
        if i >= len(text):
            raise ValueError(f"unterminated string literal at {start}")
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


@dataclass(frozen=True)
class Var:
    name: str  # without the $


@dataclass(frozen=True)
class Param:
    name: str  # without the -


def tokens(line: str) -> list:
    """A statement as [command, arg...]: a bare word is a str, a literal is a str too (the
    command is always a bare word), an array @('a', 'b') a list of str, $x a Var, -Name a Param,
    digits an int. Anything else raises ValueError: the stand-in host only accepts statements
    of this shape."""
    out: list = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in " \t":
            i += 1
        elif ch in QUOTES:
            value, i = parse_literal(line, i)
            out.append(value)
        elif line.startswith("@(", i):
            i += 2
            items: list[str] = []
            while True:
                while i < n and line[i] in " \t":
                    i += 1
                if i < n and line[i] == ")":
                    i += 1
                    break
                if i < n and line[i] in QUOTES:
                    value, i = parse_literal(line, i)
                    items.append(value)
                else:
                    raise ValueError(f"array element is not a literal: {line[i : i + 20]!r}")
                while i < n and line[i] in " \t":
                    i += 1
                if i < n and line[i] == ",":
                    i += 1
                elif i < n and line[i] == ")":
                    continue
                else:
                    raise ValueError(f"bad array at {line[i : i + 20]!r}")
            out.append(items)
        elif ch == "$":
            j = i + 1
            while j < n and (line[j].isalnum() or line[j] in "_:"):
                j += 1
            out.append(Var(line[i + 1 : j]))
            i = j
        elif ch == "-" and i + 1 < n and line[i + 1].isalpha():
            j = i + 1
            while j < n and (line[j].isalnum() or line[j] == "_"):
                j += 1
            out.append(Param(line[i + 1 : j]))
            i = j
        elif ch.isdigit():
            j = i
            while j < n and line[j].isdigit():
                j += 1
            out.append(int(line[i:j]))
            i = j
        elif ch.isalpha():
            j = i
            while j < n and (line[j].isalnum() or line[j] in "-_."):
                j += 1
            out.append(line[i:j])
            i = j
        else:
            raise ValueError(f"unexpected {ch!r} in statement {line!r}")
    return out
