r"""The Windows emulations in tests/support: PowerShell 5.1's native argument passing
(`winargv`) and the PowerShell syntax gate (`psgrammar`), then sgpfab's generated PowerShell
through both.

Expected values come from the sources cited in each table (Microsoft's documentation,
PowerShell's source and test suite, behaviour reported against Windows PowerShell 5.1 in
issues), not from running the emulation; winargv.py's docstring gives the full references.
"""

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the support package
from support import psgrammar, winargv
from support.psgrammar import parse_errors
from support.winargv import commandline_to_argv, ps51_command_line, ps51_native_argv

PY = "C:\\Python311\\python.exe"


# --- the C runtime / CommandLineToArgvW ---------------------------------------------------------

# Microsoft Learn, "main function and command-line arguments (C++)", "Results of parsing command
# lines" (current table), and the older "Parsing C Command-Line Arguments" page's table.
# The input is the text after the program name; expected is argv[1:].
MS_DOCS_TABLE = [
    ('"abc" d e', ["abc", "d", "e"]),
    ('a\\\\b d"e f"g h', ["a\\\\b", "de fg", "h"]),
    ('a\\\\\\"b c d', ['a\\"b', "c", "d"]),
    ('a\\\\\\\\"b c" d e', ["a\\\\b c", "d", "e"]),
    ('"a b c" d e', ["a b c", "d", "e"]),
    ('"ab\\"c" "\\\\" d', ['ab"c', "\\", "d"]),
    ('a\\\\\\b d"e f"g h', ["a\\\\\\b", "de fg", "h"]),
]


@pytest.mark.parametrize("rules", ["ucrt", "shell32"])
@pytest.mark.parametrize("tail,expected", MS_DOCS_TABLE)
def test_documented_command_line_examples(tail, expected, rules):
    assert commandline_to_argv("test.exe " + tail, rules=rules) == ["test.exe", *expected]


def test_doubled_quote_inside_quotes_differs_between_c_runtime_and_commandlinetoargvw():
    # C runtime (docs table; "a pair of double quote marks is interpreted as a single escaped
    # double quote mark" and the quoted string goes on): one argument.
    assert commandline_to_argv('test.exe a"b"" c d') == ["test.exe", 'ab" c d']
    # CommandLineToArgvW, as observed in MicrosoftDocs/cpp-docs issue #3291: the quote ends.
    assert commandline_to_argv('"program.exe" a"b"" c d', rules="shell32") == ["program.exe", 'ab"', "c", "d"]


@pytest.mark.parametrize("rules", ["ucrt", "shell32"])
def test_program_name_is_parsed_specially(rules):
    # Quotes group, backslashes are literal, no escaping (both documentation pages).
    assert commandline_to_argv('"C:\\Program Files\\x\\" a', rules=rules)[0] == "C:\\Program Files\\x\\"
    assert commandline_to_argv("C:\\x\\py.exe a b", rules=rules) == ["C:\\x\\py.exe", "a", "b"]
    # CommandLineToArgvW: "if lpCmdLine starts with any amount of whitespace, CommandLineToArgvW
    # will consider the first argument to be an empty string" (the UCRT's loop does the same).
    assert commandline_to_argv("  a b", rules=rules) == ["", "a", "b"]


def test_quoted_program_name_followed_by_text():
    # UCRT's argv[0] loop toggles on every quote and stops at a blank outside quotes;
    # CommandLineToArgvW's argv[0] ends at the closing quote (u-config's cmdline.c, state 8).
    assert commandline_to_argv('"a"b c') == ["ab", "c"]
    assert commandline_to_argv('"a"b c', rules="shell32") == ["a", "b", "c"]


@pytest.mark.parametrize("rules", ["ucrt", "shell32"])
@pytest.mark.parametrize(
    "tail,expected",
    [
        ('""', [""]),  # an empty quoted argument is an argument
        ('a "" b', ["a", "", "b"]),
        ('"unterminated arg', ["unterminated arg"]),  # "all the characters read so far"
        ("a\tb", ["a", "b"]),  # tab delimits too
        ("a\u00a0b", ["a\u00a0b"]),  # only space and tab are white space
        ("C:\\a\\ b", ["C:\\a\\", "b"]),  # backslashes not before a quote are literal
    ],
)
def test_rules_shared_by_both_parsers(tail, expected, rules):
    assert commandline_to_argv("p.exe " + tail, rules=rules)[1:] == expected


def test_parser_refuses_nul_and_unknown_rules():
    with pytest.raises(ValueError):
        commandline_to_argv("p.exe a\0b")
    with pytest.raises(ValueError):
        commandline_to_argv("p.exe", rules="bash")


# --- Windows PowerShell 5.1: the command line it builds -----------------------------------------


@pytest.mark.parametrize(
    "args,cmdline",
    [
        ([], '"C:\\Python311\\python.exe"'),
        (["--root", "C:\\api"], '"C:\\Python311\\python.exe" --root C:\\api'),
        # whitespace -> wrapped in quotes; nothing inside is escaped (issue #1995), and a trailing
        # backslash is not doubled (that came with PR #4965, PowerShell 6)
        (["C:\\sgp api\\"], '"C:\\Python311\\python.exe" "C:\\sgp api\\"'),
        (['{"a": 1}'], '"C:\\Python311\\python.exe" "{"a": 1}"'),
        # no whitespace -> verbatim, quotes and all
        (['{"a":1}'], '"C:\\Python311\\python.exe" {"a":1}'),
        # whitespace only between an odd number of quotes -> not wrapped
        (['a"b c"d'], '"C:\\Python311\\python.exe" a"b c"d'),
        # 5.1 counts backslash-escaped quotes too (fixed in PR #2182, PowerShell 6 only)
        (['a\\"b c\\"d'], '"C:\\Python311\\python.exe" a\\"b c\\"d'),
        # an empty argument leaves only its separating space
        (["a", "", "b"], '"C:\\Python311\\python.exe" a  b'),
        (["", "b"], '"C:\\Python311\\python.exe"  b'),
        # tab, newline and NBSP are char.IsWhiteSpace too
        (["a\tb"], '"C:\\Python311\\python.exe" "a\tb"'),
        (["a\u00a0b"], '"C:\\Python311\\python.exe" "a\u00a0b"'),
        # --% is dropped; what follows is passed raw
        (["x", "--%", 'a "b c" d'], '"C:\\Python311\\python.exe" x  a "b c" d'),
    ],
)
def test_ps51_command_line(args, cmdline):
    assert ps51_command_line(PY, args) == cmdline


def test_ps51_program_path_is_quoted_once():
    assert ps51_command_line('"C:\\x y\\a.exe"', ["b"]) == '"C:\\x y\\a.exe" b'
    assert ps51_command_line("  C:\\x y\\a.exe ", []) == '"C:\\x y\\a.exe"'


def test_ps51_verbatim_marker_expands_environment_variables():
    assert (
        ps51_command_line(PY, ["--%", "%ROOT%\\x", "%NOPE%"], environ={"root": "C:\\sgp"})
        == '"C:\\Python311\\python.exe"  C:\\sgp\\x %NOPE%'
    )


# --- Windows PowerShell 5.1 end to end: what the child's sys.argv[1:] is --------------------------

# Each row is behaviour documented for Windows PowerShell 5.1's (legacy) argument passing.
DOCUMENTED_PS51 = [
    # PowerShell issue #1995, as reported on 5.1.14393: native.exe "`"a`"" -> ARGV[1] == a
    pytest.param(['"a"'], ["a"], id="issue-1995-quotes-stripped"),
    # PowerShell's test suite (NativeCommandArguments.Tests.ps1, 2016): 'a"b c"d' -> <ab cd>
    pytest.param(['a"b c"d', 'a"b c"d'], ["ab cd", "ab cd"], id="ps-tests-quoted-spaces"),
    # same file: 'a\"b c\"d' should give a"b c"d, but "this functionality was broken in
    # PowerShell 5.0 and 5.1": 5.1 passes it unquoted and it splits
    pytest.param(['a\\"b c\\"d'], ['a"b', 'c"d'], id="ps-tests-escaped-quotes-broken-in-5.1"),
    # PR #4965's message: ".\test 1\" arrives as .\test 1"  (the \" escapes the closing quote)
    pytest.param([".\\test 1\\"], ['.\\test 1"'], id="pr-4965-trailing-backslash"),
    # issue #1995, mklement0's summary: in Windows PowerShell '3\" of snow' breaks
    pytest.param(['3\\" of snow'], ['3"', "of", "snow"], id="issue-1995-3-inch-of-snow"),
    # issue #4661: py test.py test "" -> ['test.py', 'test']: empty arguments are dropped
    pytest.param(["test.py", "test", ""], ["test.py", "test"], id="issue-4661-empty-dropped"),
    # anomalyco/opencode issue #42402, observed on 5.1 with node's argv
    pytest.param(['a "b c" d'], ["a b", "c d"], id="opencode-42402-plain"),
    pytest.param(['a \\"b c\\" d'], ['a "b c" d'], id="opencode-42402-backslash"),
    pytest.param(["a 'b c' d"], ["a 'b c' d"], id="opencode-42402-single-quotes"),
]


@pytest.mark.parametrize("args,expected", DOCUMENTED_PS51)
def test_documented_ps51_behaviour(args, expected):
    assert ps51_native_argv(PY, args) == expected


RELEASE_JSON = '{"version": "1.0.5", "digest": "abc"}'


def test_json_argument_arrives_mangled():
    """PowerShell #1995: the quotes inside JSON are not escaped, so the child's parser eats them."""
    argv = ps51_native_argv(PY, ["finalize", "--meta", RELEASE_JSON])
    assert argv == ["finalize", "--meta", "{version: 1.0.5, digest: abc}"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(argv[2])
    # a value with a blank inside splits the argument in two
    assert ps51_native_argv(PY, ['{"reason": "not healthy"}']) == ["{reason: not", "healthy}"]
    # and without blanks the quotes still vanish
    assert ps51_native_argv(PY, [json.dumps({"v": "1.0.5"}, separators=(",", ":"))]) == ["{v:1.0.5}"]


def test_plain_arguments_survive():
    args = [
        "--root",
        "C:\\api",
        "v1.0.5",
        "health",
        "--url",
        "http://127.0.0.1:8000/health",
        "C:\\sgp api",
        "C:\\sgp api\\shared",
        "svc:(OI)(CI)M",
        "-m uvicorn main:app --port 8000",
    ]
    assert ps51_native_argv(PY, args) == args
    assert winargv.ps51_survives(args)


def test_trailing_backslash_inside_quotes_swallows_the_next_argument():
    assert ps51_native_argv(PY, ["--root", "C:\\sgp api\\", "status"]) == ["--root", 'C:\\sgp api" status']
    assert ps51_native_argv(PY, ["--root", "C:\\sgp api\\", "status"], rules="shell32") == [
        "--root",
        'C:\\sgp api" status',
    ]
    # without a blank it is not quoted, so the backslash is harmless
    assert ps51_native_argv(PY, ["--root", "C:\\api\\", "status"]) == ["--root", "C:\\api\\", "status"]


def test_a_safe_encoding_of_json_survives():
    import base64

    raw = RELEASE_JSON.encode()
    for encode, decode in [(base64.b64encode, base64.b64decode), (base64.urlsafe_b64encode, base64.urlsafe_b64decode)]:
        token = encode(raw).decode("ascii")
        argv = ps51_native_argv(PY, ["finalize", "--meta-b64", token])
        assert argv == ["finalize", "--meta-b64", token]
        assert json.loads(decode(argv[2])) == json.loads(RELEASE_JSON)
    # a plain token (no blank, no quote) needs no encoding at all
    assert ps51_native_argv(PY, ["--digest", "sha256:" + "ab" * 32]) == ["--digest", "sha256:" + "ab" * 32]


def test_arguments_without_quotes_and_without_a_blank_before_a_trailing_backslash_survive():
    """The rules above imply: an argument survives if it is non-empty, has no `"`, is not `--%`
    and does not end in a backslash while containing white space. Checked on random strings."""
    rng = random.Random(1995)
    alphabet = "aZ09 \t\\/:;'$`@{}()[],.=-_\u00e9\u4e2d\u00a0"
    for _ in range(3000):
        arg = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        has_ws = any(winargv.net_is_whitespace(c) for c in arg)
        expected = not (arg.endswith("\\") and has_ws)
        assert winargv.ps51_survives([arg, "next"]) is expected, arg


def test_net_whitespace_is_not_pythons():
    assert winargv.net_is_whitespace("\u00a0") and winargv.net_is_whitespace("\u2003")
    assert not winargv.net_is_whitespace("\x1c")  # Python's str.isspace() says yes
    assert not winargv.net_is_whitespace("\u200b")  # zero-width space is Cf, not Zs


# --- the PowerShell grammar gate -----------------------------------------------------------------

VALID = {
    "here-string single": "$a = @'\nhello 'x' \"y\" $notexpanded\n'@\n$a",
    "here-string double": '$a = @"\nhello $x $(1 + 2)\n"@\n',
    "script block": "$sb = { param($x) $x + 1 }; & $sb 2",
    "hashtable": "$h = @{ a = 1; 'b c' = 'd'; e = @(1, 2) }",
    "array": "$a = @(1, 'two', \"three\")",
    "splatting": "& $exe @args\nGet-Item @params",
    "format operator": "'{0} and {1}' -f $a, $b",
    "if elseif else": "if ($a -eq 1) { 'a' } elseif ($a -gt 2) { 'b' } else { 'c' }",
    "if else on lines": "if ($a) {\n  1\n}\nelse {\n  2\n}",
    "foreach": "foreach ($d in @('a', 'b')) { New-Item -ItemType Directory -Force -Path $d | Out-Null }",
    "try catch finally": "try { throw 'x' } catch [System.Exception] { $_ } finally { 'f' }",
    "function typed params": "function Invoke-Checked([string]$Exe, [string[]]$Arguments) {\n  & $Exe @Arguments\n}",
    "function param block": "function F {\n  [CmdletBinding()]\n  param([Parameter(Mandatory)][string]$Name, [int]$N = 3)\n  $Name\n}",
    "call operator": "& $exe @args",
    "env assignment": "$env:X = 'y'; $env:PATH = 'a' + ';' + $env:PATH",
    "typographic quotes doubled": "'it\u2019\u2019s \u2018\u2018x\u2019\u2019 \u201a\u201a \u201b\u201b'",
    "typographic quote strings": "\u2018abc\u2019; \u201cabc\u201d",
    "doubled quotes": '\'it\'\'s\'; "say ""hi"""',
    "backtick escapes": '"a`tb`n`"c`" `$notvar"\nWrite-Host a `\n  b',
    "static method": "[IO.File]::ReadAllBytes('C:\\x')",
    "static property chain": "[Text.Encoding]::UTF8.GetString($b)",
    "pipeline ForEach-Object": "Get-ChildItem | ForEach-Object { $_.Name } | Where-Object { $_ -like 'a*' }",
    "split": "$k, $v = $_ -split '=', 2",
    "match": "if ('abc' -match '^a') { $Matches[0] }",
    "replace": "([string]$s.Status).ToLower() -replace 'pending$', '_pending'",
    "exit code": "exit $LASTEXITCODE",
    "comments": "# a comment\n<# block\ncomment #>\n'x' # trailing",
    "while with assignment": "while ($null -ne ($line = [Console]::In.ReadLine())) { $line }",
    "New-Object with args": "$gz = New-Object IO.Compression.GZipStream($src, [IO.Compression.CompressionMode]::Decompress)",
    "method chain": "(Get-Date).AddSeconds(5).ToString()",
    "redirection": "cmd /c dir 2>&1 > $null",
    "subexpression in string": '"a $($x.y) b"',
    "not": "if (-not (Test-Path -LiteralPath 'x')) { 'n' }",
    "switch": "switch ($x) { 'a' { 1 } 'b' { 2 } }\nswitch ($x) {\n  'a' { 1 }\n  default { 2 }\n}",
    "ScriptBlock Create": "& ([ScriptBlock]::Create($s)); exit $LASTEXITCODE",
    "stop parsing": "icacls.exe --% C:\\x /grant y",
    "range": "1..10 | % { $_ }",
    "typed assignment": "[string[]]$a = @()",
    "do until / for": "do { $i++ } until ($i -gt 3)\nfor ($i = 0; $i -lt 3; $i++) { $i }",
    "index": "$a[0]; $h['k']; $a[-1]",
    "parameter with colon": "Get-Service -Name x -ErrorAction:SilentlyContinue",
    "unicode dash parameter": "Get-Item \u2013Path x",
    "label without break label": ":outer foreach ($i in 1..2) { break }",
    "class": "class Foo { [string]$Name; Foo() { $this.Name = 'x' } }",
    # PowerShell's parser (Parser.cs StatementRule) parses a stray else/catch as a command named
    # so when nothing went wrong before it: a run-time error, not a syntax error.
    "else as a command name": "else { 'x' }",
    "empty": "",
    "blanks only": " \n\t\n",
    "comments only": "# c\n<# block #>\n",
}

INVALID = {
    "unclosed single quote": "Write-Output 'abc",
    "unclosed double quote": 'Write-Output "abc',
    "unclosed brace": "if ($a) { 'x'",
    "stray closing brace": "'x' }",
    "stray quote from broken quoting": "Invoke-Checked 'icacls.exe' @('C:\\it's', '/T')",
    "stray quote at end": "Set-Location -LiteralPath 'C:\\a'b'",
    "unbalanced typographic quote": "Set-Location -LiteralPath 'C:\\it\u2019s'",
    "unclosed paren": "Write-Output (1 + 2",
    "unclosed array": "$a = @(1, 2",
    "unclosed hashtable": "$a = @{ a = 1",
    "unclosed here-string": "$a = @'\nabc\n",
    "indented here-string end": "$a = @'\nabc\n '@\n",
    "if without condition": "if { 'x' }",
    "missing operand": "$a = 1 +",
    "unclosed subexpression": '"a $(b "',
    "function without body": "function f",
    "unclosed block comment": "<# abc",
    "unclosed block comment after a comment": "# c\n<# abc",
    "trailing pipe": "Get-Item x |",
    "unclosed index": "$a[0",
    "stray closing paren": "Write-Output 1)",
    "foreach without in": "foreach ($d @(1)) { $d }",
    "PowerShell 7 &&": "a && b",
    "PowerShell 7 ||": "a || b",
    "PowerShell 7 ??": "$x ?? 1",
    "PowerShell 7 ternary": "$a = $b ? 1 : 2",
    "PowerShell 7 ?.": "${a}?.b",
    "trailing & (background job)": "Get-Process &",
}

# Measured gaps of tree-sitter-powershell 0.26.4 (see psgrammar's docstring). strict: if the
# grammar improves, these fail and the list above should be updated.
FALSE_POSITIVES = {
    "break label": ":outer while ($true) { break outer }",
    "continue label": ":outer foreach ($i in 1..2) { continue outer }",
    "default clause on the same line": "switch ($x) { 'a' { 1 } default { 2 } }",
    "CmdletBinding and param on one line": "function f { [CmdletBinding()] param() $a }",
    "named blocks on one line": "begin { } process { } end { }",
}
MISSED = {
    "empty array element": "@(1,,2)",  # PowerShell: "Missing expression after ','."
}


@pytest.mark.parametrize("name", VALID)
def test_valid_powershell_parses_clean(name):
    assert parse_errors(VALID[name]) == []


@pytest.mark.parametrize("name", INVALID)
def test_invalid_powershell_is_caught(name):
    assert parse_errors(INVALID[name]) != []


@pytest.mark.xfail(strict=True, reason="grammar gap: valid PowerShell reported as an error")
@pytest.mark.parametrize("name", FALSE_POSITIVES)
def test_known_false_positives(name):
    assert parse_errors(FALSE_POSITIVES[name]) == []


@pytest.mark.xfail(strict=True, reason="grammar gap: invalid PowerShell accepted")
@pytest.mark.parametrize("name", MISSED)
def test_known_missed_errors(name):
    assert parse_errors(MISSED[name]) != []


def test_errors_name_line_column_and_text():
    script = "Write-Output 'ok'\n$x = @(1, 2\n'after'"
    errors = parse_errors(script)
    assert errors and all(e.split(":")[0].isdigit() for e in errors)
    assert errors[0].startswith("2:1: ERROR near ") and "$x = @(1, 2" in errors[0]
    # a MISSING token is reported by its type
    assert parse_errors("if ($a) { 'x'") == ["1:14: MISSING '}'"]


def test_columns_count_characters_not_bytes():
    assert parse_errors("'\u00e9\u00e9\u4e2d' }") == ["1:7: ERROR near '}'"]


def test_snippets_come_from_the_original_text():
    (error,) = parse_errors("Set-Location -LiteralPath 'C:\\it\u2019s'")
    assert "\u2019" in error


def test_ps7_operators_are_allowed_when_not_targeting_51():
    assert parse_errors("a && b") == ["1:3: '&&' needs PowerShell 7 (Windows PowerShell 5.1 rejects it)"]
    assert parse_errors("a && b", ps51=False) == []


def test_assert_parses_lists_errors_with_the_numbered_script():
    psgrammar.assert_parses("'fine'")
    with pytest.raises(AssertionError, match=r"(?s)MISSING '\}'.*   1\| if"):
        psgrammar.assert_parses("if ($a) { 'x'")


# --- sgpfab's generated PowerShell through both --------------------------------------------------


def _sgpfab_scripts() -> dict[str, str]:
    """Every script sgpfab's Windows builders and WinRM transport produce, for one realistic
    host (support.winscripts: the one place that knows the builders' signatures)."""
    import tempfile

    from support import winscripts

    from sgpfab import windows

    with tempfile.TemporaryDirectory() as d:
        inst = winscripts.instance(Path(d))
        named = {name: text for name, (text, _stdin) in winscripts.account_scripts(Path(d)).items()}
    return {"PRELUDE": windows.PRELUDE, **winscripts.all_scripts(inst), **winscripts.transport_scripts(), **named}


@pytest.fixture(scope="module")
def sgpfab_scripts():
    return _sgpfab_scripts()


def test_every_sgpfab_script_parses_as_windows_powershell(sgpfab_scripts):
    assert len(sgpfab_scripts) >= 25
    failures = {name: parse_errors(s) for name, s in sgpfab_scripts.items()}
    failures.update(
        {f"PRELUDE + {name}": parse_errors(sgpfab_scripts["PRELUDE"] + s) for name, s in sgpfab_scripts.items()}
    )  # as WinRMTransport.run sends them
    assert {name: errs for name, errs in failures.items() if errs} == {}


def test_every_native_argument_sgpfab_generates_survives_ps51(sgpfab_scripts):
    """Each `Invoke-Checked 'exe' @(...)` line: the child's argv[1:] is exactly the array."""
    from support.pslit import literals

    calls = [
        line.strip()
        for s in sgpfab_scripts.values()
        for line in s.splitlines()
        if line.strip().startswith(("Invoke-Checked '", "Invoke-Passthrough '"))
    ]
    assert len(calls) >= 5
    for call in calls:
        exe, *args = literals(call)
        assert ps51_native_argv(exe, args) == args, call


def test_json_or_quotes_through_invoke_checked_do_not_survive_ps51():
    """What would happen to a `"` in an argument sgpfab passed to hostctl on a Windows host
    (JSON, as the old `finalize --meta` did; a `--reason` quoting something): the generated
    script is fine, the argument the child gets is not. The builders refuse such arguments."""
    import tempfile

    from support import winscripts
    from support.pslit import literals

    from sgpfab import windows

    with tempfile.TemporaryDirectory() as d:
        inst = winscripts.instance(Path(d))
    meta = json.dumps({"version": "1.0.5", "bundle_digest": "sha256:ab", "deployed_by": "ci"})
    for args, received in [
        (
            ["finalize", "--name", "v1.0.5", "--meta", meta],
            ["finalize", "--name", "v1.0.5", "--meta", "{version: 1.0.5, bundle_digest: sha256:ab, deployed_by: ci}"],
        ),
        (["mark", "--bad", "--reason", 'health: got "1.0.4"'], ["mark", "--bad", "--reason", "health: got 1.0.4"]),
        (["mark", "--bad", "--reason", 'said "no way"'], ["mark", "--bad", "--reason", "said no", "way"]),
    ]:
        script = f"Invoke-Checked {windows.q(PY)} @({', '.join(windows.q(a) for a in args)})"
        assert parse_errors(script) == []
        exe, *literal_args = literals(script)
        assert literal_args == args
        assert ps51_native_argv(exe, literal_args) == received
        with pytest.raises(ValueError, match="would mangle"):
            windows.hostctl(inst, *args)
