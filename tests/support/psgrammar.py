"""A syntax gate for generated PowerShell: parse with a real PowerShell grammar, report errors.

`parse_errors(script)` parses `script` with tree-sitter's PowerShell grammar (PyPI packages
`tree-sitter` and `tree-sitter-powershell`, the latter built from
https://github.com/airbus-cert/tree-sitter-powershell) and returns one line per ERROR or MISSING
node, `"LINE:COL: ERROR near '...'"` / `"LINE:COL: MISSING ';'"` (1-based; COL counts
characters), or [] when the script parses cleanly. `assert_parses(script)` raises an
AssertionError that lists them with the script's numbered lines.

Three adjustments, all narrow:

* Before parsing, the characters PowerShell's tokenizer takes as aliases of ASCII ones are
  mapped to them, one character for one: the typographic quotes U+2018 U+2019 U+201A U+201B
  (single) and U+201C U+201D U+201E (double), the dashes U+2013 U+2014 U+2015, and the blanks
  U+00A0 and U+0085 (PowerShell's `CharTraits.cs` IsSingleQuote / IsDoubleQuote / IsDash and
  tokenizer.cs's whitespace cases, PowerShell/PowerShell at 60b3b304f2). The grammar does not
  know them, so without this it accepts `'a\u2019b'`, which PowerShell reads as the string
  `'a\u2019` followed by an unterminated `b'`: exactly the broken quoting this gate exists for.
* The grammar wants at least one statement: it marks an empty script, or one of only blanks
  and comments, as an ERROR. Such a script is valid PowerShell, so a tree whose root is an
  ERROR made of nothing but complete comments and blanks counts as clean (an unclosed `<#`
  still fails: the grammar does not make it a comment).
* The grammar is PowerShell 7's. With `ps51=True` (the default), the pipeline-chain operators
  `&&` and `||`, which Windows PowerShell 5.1 rejects ("The token '&&' is not a valid statement
  separator in this version."), are reported too. (`??`, `?:` and `?.` are already errors in
  the grammar.)

Known gaps of the grammar (tree-sitter-powershell 0.26.4), measured by tests/unit/test_winemu.py;
valid PowerShell it reports as errors (false positives), none of which sgpfab generates:
  - `break LABEL` / `continue LABEL` (a loop label after break/continue);
  - a `default { }` switch clause on the same line as the clause before it, unless a `;`
    separates them;
  - `[CmdletBinding()] param(...)` or `begin { } process { }` on ONE line (on separate lines
    they parse);
  - probably also an argument made of a quoted string followed by more text without a blank
    (`Write-Output 'a'b`): the grammar rejects it; PowerShell is believed to accept it
    (not checked on a real host, so not in the tests);
invalid PowerShell it accepts (missed errors):
  - `@(1,,2)` (a missing array element).
A stray `else { }` or `catch { }` is accepted, and rightly: PowerShell's parser (Parser.cs,
StatementRule) takes a keyword with nothing before it as a command name, a run-time error.
What a grammar cannot see: a `str.format` template left unformatted still parses (`{dest}` and
`{{ }}` are script blocks), and so does any script that is valid but means something else.

No other error is suppressed: a false positive in a generated script shows up as a failure, to be
fixed or, if it really is a grammar gap, written down here.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["parse_errors", "assert_parses", "normalize", "PS_CHAR_ALIASES"]

# One character for one, so lines and character columns do not move.
PS_CHAR_ALIASES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u00a0": " ",
        "\u0085": " ",
    }
)

_PS7_ONLY = {"pipeline_chain_tail": "'{text}' needs PowerShell 7 (Windows PowerShell 5.1 rejects it)"}
_SNIPPET = 40


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter
    import tree_sitter_powershell

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def normalize(script: str) -> str:
    """`script` with PowerShell's alias characters (typographic quotes, dashes, NBSP, NEL)
    replaced by the ASCII characters PowerShell reads them as."""
    return script.translate(PS_CHAR_ALIASES)


def _snippet(text: str) -> str:
    text = text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."
    return repr(text)


def _only_comments_and_blanks(root) -> bool:
    """The grammar's ERROR for a script with no statement (see the module docstring)."""
    return root.is_error and all(
        child.type == "comment" or (child.is_error and not child.text.strip()) for child in root.children
    )


def parse_errors(script: str, *, ps51: bool = True) -> list[str]:
    """Every syntax error the grammar finds in `script`, as 'LINE:COL: ...'; [] when clean."""
    source = normalize(script)
    data = source.encode("utf-8")
    tree = _parser().parse(data)
    if _only_comments_and_blanks(tree.root_node):
        return []
    # tree-sitter counts bytes; report characters (the same in `script` and `source`).
    line_starts = [0]
    for i, ch in enumerate(source):
        if ch == "\n":
            line_starts.append(i + 1)

    def char_offset(byte_offset: int) -> int:
        return len(data[:byte_offset].decode("utf-8", "replace"))

    def where(node) -> str:
        row = node.start_point[0]
        col = char_offset(node.start_byte) - line_starts[row]
        return f"{row + 1}:{col + 1}"

    def text(node) -> str:
        return script[char_offset(node.start_byte) : char_offset(node.end_byte)]

    out: list[tuple[int, str]] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_missing:
            out.append((node.start_byte, f"{where(node)}: MISSING {node.type!r}"))
            continue
        if node.is_error:
            out.append((node.start_byte, f"{where(node)}: ERROR near {_snippet(text(node))}"))
            continue  # one report per broken region, not one per token inside it
        if ps51 and node.type in _PS7_ONLY:
            out.append((node.start_byte, f"{where(node)}: " + _PS7_ONLY[node.type].format(text=text(node))))
        stack.extend(reversed(node.children))
    return [msg for _, msg in sorted(out, key=lambda item: item[0])]


def assert_parses(script: str, *, ps51: bool = True, name: str = "script") -> None:
    """Raise AssertionError listing every syntax error (with the numbered script) if any."""
    errors = parse_errors(script, ps51=ps51)
    if errors:
        numbered = "\n".join(f"{i:4}| {line}" for i, line in enumerate(script.splitlines(), 1))
        raise AssertionError(f"{name} does not parse as PowerShell:\n  " + "\n  ".join(errors) + "\n" + numbered)
