r"""How a native program started from Windows PowerShell 5.1 receives its arguments.

Windows has no argv: a process gets ONE command-line string, and the program's C runtime splits
it. So `& $exe @args` in Windows PowerShell 5.1 goes through two steps, both emulated here:

1. `ps51_command_line`: PowerShell joins the arguments into a command line (its *legacy* native
   argument passing; PowerShell 7.3 made `$PSNativeCommandArgumentPassing` ('Standard' /
   'Windows') the default, 5.1 has only this) and .NET's `Process.Start` puts the quoted
   program path in front.
2. `commandline_to_argv`: the child's C runtime (UCRT, which python.exe uses) or shell32's
   `CommandLineToArgvW` splits that string back into argv.

`ps51_native_argv` composes the two: what a Python child sees as `sys.argv[1:]`.

Sources for step 1 (PowerShell 5.1, legacy mode)
-------------------------------------------------
* PowerShell's own source, as imported from Windows PowerShell ("psl-monad", the 5.1-era code)
  when it was open-sourced: `NativeCommandParameterBinder.cs` at commit
  60b3b304f2e1042bcf773d7e2ae3530a1f5d52f0 (2016-03-30),
  https://github.com/PowerShell/PowerShell/blob/60b3b304f2e1042bcf773d7e2ae3530a1f5d52f0/src/System.Management.Automation/engine/NativeCommandParameterBinder.cs
  `BindParameters` and `appendOneNativeArgument`. The rules, as that code has them:
    - every argument after the first is preceded by one space, appended *before* the
      argument is looked at, so an empty string adds only that space: empty arguments vanish
      (observed: PowerShell issue #4661, on 6.0-beta which still had this code,
      `py test.py test ""` -> `['test.py', 'test']`);
    - an argument whose value is exactly `--%` is not passed; every later argument is passed
      raw, after `Environment.ExpandEnvironmentVariables` (`%NAME%` expansion), never quoted;
    - otherwise the argument is wrapped in `"..."` iff it contains a whitespace character
      (`char.IsWhiteSpace`) at a point where an EVEN number of `"` precede it in the argument
      (it counts every `"`, including ones preceded by a backslash); nothing inside is escaped:
      embedded `"` are not escaped (PowerShell issue #1995) and trailing backslashes are not
      doubled, so `C:\a b\` becomes `"C:\a b\"`, whose `\"` the child reads as a literal quote;
    - an argument without such whitespace is passed verbatim.
* What 5.1 does NOT have: commit 8bca1f50c5 (PR #2182, Sept 2016, PowerShell 6) stopped
  counting backslash-escaped quotes; the test added with it says "This functionality was broken
  in PowerShell 5.0 and 5.1, so this test will fail on those versions" (test/powershell/Language/
  Scripting/NativeExecution/NativeCommandArguments.Tests.ps1 at 7816516c24). Commit 59311d03e1
  (PR #4965, Oct 2017, PowerShell 6) started doubling trailing backslashes. Both are left out.
* `NativeCommandProcessor.cs` (same commit): `startInfo.FileName = this.Path` (the resolved
  program path), `startInfo.Arguments = <the binder's string>`, `UseShellExecute = false`.
* .NET Framework `Process.BuildCommandLine` (reference source,
  https://github.com/microsoft/referencesource/blob/master/System/services/monitoring/system/diagnosticts/Process.cs):
  `"` + FileName.Trim() + `"` unless it already starts and ends with `"`, then, if Arguments
  is not empty, one space and Arguments.

Uncertain: the 5.1 binary's source is not public; the 2016 import is the closest public code
and matches the behaviour reported against 5.1 in PowerShell issue #1995 (e.g. mklement0's
2019-12-05 summary: in Windows PowerShell `'3\" of snow'` breaks) and in anomalyco/opencode
issue #42402 (5.1 passes `a "b c" d` to node as `["a b", "c d"]`). Not modelled: arrays
nested inside one splatted element (joined by spaces, or commas for `a,b` literals in script
text), ScriptBlock arguments, batch files (.cmd/.bat are parsed by cmd.exe, not by these rules).

Sources for step 2 (splitting)
------------------------------
* Microsoft Learn, "main function and command-line arguments (C++)", section "Parsing C++
  command-line arguments",
  https://learn.microsoft.com/en-us/cpp/cpp/main-function-command-line-args#parsing-c-command-line-arguments
  (MicrosoftDocs/cpp-docs docs/cpp/main-function-command-line-args.md): white space is space or
  tab; argv[0] is parsed specially (quotes group, no backslash rules); `"` groups; 2n
  backslashes + `"` -> n backslashes and a delimiter; 2n+1 backslashes + `"` -> n backslashes
  and a literal `"`; other backslashes are literal; "Within a quoted string, a pair of double
  quote marks is interpreted as a single escaped double quote mark" (the post-2008 rule);
  an unterminated quote runs to the end.
* The UCRT's `parse_command_line` (startup/argv_parsing.cpp, shipped as source with the Windows
  SDK, here 10.0.22000.0): the exact loop for the rules above; `""` inside quotes gives `"`
  and the quoted region goes on. `rules="ucrt"` is this. Python on Windows (python.exe's
  `wmain`) takes sys.argv from it.
* `CommandLineToArgvW` (https://learn.microsoft.com/en-us/windows/win32/api/shellapi/nf-shellapi-commandlinetoargvw):
  the same 2n / 2n+1 backslash rules, but `""` inside quotes gives `"` and ENDS the quoted
  region: MicrosoftDocs/cpp-docs issue #3291 shows `a"b"" c d` -> `ab"`, `c`, `d` from
  CommandLineToArgvW where the C runtime gives `ab" c d`. A quoted argv[0] ends at the next
  `"`. `rules="shell32"` follows skeeto/u-config's cmdline.c, written to match
  CommandLineToArgvW "including undocumented behavior".
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

__all__ = [
    "net_is_whitespace",
    "ps51_needs_quotes",
    "ps51_arguments",
    "ps51_command_line",
    "commandline_to_argv",
    "ps51_native_argv",
    "ps51_survives",
]

_NET_LATIN1_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0")


def net_is_whitespace(ch: str) -> bool:
    """.NET `char.IsWhiteSpace`: U+0009-U+000D, U+0020, U+0085, U+00A0 and the Unicode categories
    Zs, Zl, Zp (not Python's `str.isspace`, which also takes U+001C-U+001F)."""
    if ord(ch) < 0x100:
        return ch in _NET_LATIN1_WHITESPACE
    return unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def ps51_needs_quotes(arg: str) -> bool:
    """PowerShell 5.1's test: whitespace where an even number of `"` come before it."""
    quotes = 0
    need = False
    for ch in arg:
        if ch == '"':
            quotes += 1
        elif net_is_whitespace(ch) and quotes % 2 == 0:
            need = True
    return need


def _expand_environment_variables(text: str, environ: Mapping[str, str] | None) -> str:
    """Win32 ExpandEnvironmentStrings (behind .NET's Environment.ExpandEnvironmentVariables):
    `%NAME%` with NAME defined (case-insensitively) is replaced; anything else stays as is."""
    if not environ or "%" not in text:
        return text
    env = {k.upper(): v for k, v in environ.items()}
    out, i = [], 0
    while i < len(text):
        if text[i] != "%":
            out.append(text[i])
            i += 1
            continue
        j = text.find("%", i + 1)
        if j < 0:
            out.append(text[i:])
            break
        name = text[i + 1 : j].upper()
        if name and name in env:
            out.append(env[name])
            i = j + 1
        else:  # not a variable: keep `%NAME`; the closing % may open the next reference
            out.append(text[i:j])
            i = j
    return "".join(out)


def ps51_arguments(args: Sequence[str | None], *, environ: Mapping[str, str] | None = None) -> str:
    """The argument string Windows PowerShell 5.1 builds for `& $exe @args` (each element a .NET
    string; None stands for $null and is dropped like ''). `environ` is only used after `--%`."""
    out: list[str] = []
    first = True
    verbatim = False
    for arg in args:
        if not first:
            out.append(" ")
        first = False
        if arg == "--%":
            verbatim = True
            continue
        if not arg:  # string.IsNullOrEmpty: nothing but the separator above
            continue
        if "\0" in arg:
            raise ValueError("a Windows command line cannot contain NUL")
        if verbatim:
            out.append(_expand_environment_variables(arg, environ))
        elif ps51_needs_quotes(arg):
            out.append('"' + arg + '"')
        else:
            out.append(arg)
    return "".join(out)


def _net_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and net_is_whitespace(text[start]):
        start += 1
    while end > start and net_is_whitespace(text[end - 1]):
        end -= 1
    return text[start:end]


def ps51_command_line(exe: str, args: Sequence[str | None], *, environ: Mapping[str, str] | None = None) -> str:
    """The Win32 command line Windows PowerShell 5.1 starts `& $exe @args` with.

    `exe` is the program path PowerShell resolved (for `icacls.exe` that is
    `C:\\Windows\\system32\\icacls.exe`); .NET quotes it unless it is quoted already."""
    name = _net_trim(exe)
    if not (name.startswith('"') and name.endswith('"')):
        name = f'"{name}"'
    arguments = ps51_arguments(args, environ=environ)
    return name + (" " + arguments if arguments else "")


def _argv0_ucrt(s: str) -> tuple[str, int]:
    name: list[str] = []
    p, in_quotes = 0, False
    while True:  # the UCRT's do { } while loop
        c = s[p] if p < len(s) else "\0"
        p += 1
        if c == '"':
            in_quotes = not in_quotes
        else:
            name.append(c)
        if c == "\0" or (not in_quotes and c in " \t"):
            break
    if c == "\0":
        p -= 1
    name.pop()  # the NUL, or the blank that ended the name (the UCRT overwrites it with NUL)
    return "".join(name), p


def _split_ucrt(s: str) -> list[str]:
    argv0, p = _argv0_ucrt(s)
    argv = [argv0]
    n = len(s)
    in_quotes = False
    while True:
        while p < n and s[p] in " \t":
            p += 1
        if p >= n:
            return argv
        arg: list[str] = []
        while True:
            copy = True
            slashes = 0
            while p < n and s[p] == "\\":
                p += 1
                slashes += 1
            if p < n and s[p] == '"':
                if slashes % 2 == 0:
                    if in_quotes and p + 1 < n and s[p + 1] == '"':
                        p += 1  # "" inside quotes: a literal ", still inside the quotes
                    else:
                        copy = False
                        in_quotes = not in_quotes
                slashes //= 2
            arg.append("\\" * slashes)
            if p >= n or (not in_quotes and s[p] in " \t"):
                break
            if copy:
                arg.append(s[p])
            p += 1
        argv.append("".join(arg))


def _split_shell32(s: str) -> list[str]:
    n = len(s)
    # argv[0]: a leading blank gives ''; a leading quote runs to the next quote; else to a blank.
    if n and s[0] in " \t":
        argv, p = [""], 1
    elif n and s[0] == '"':
        end = s.find('"', 1)
        argv, p = ([s[1:]], n) if end < 0 else ([s[1:end]], end + 1)
    else:
        p = 0
        while p < n and s[p] not in " \t":
            p += 1
        argv = [s[:p]]
    arg: list[str] | None = None
    in_quotes = False
    while p < n:
        c = s[p]
        if arg is None:
            if c in " \t":
                p += 1
                continue
            arg = []
        if c == "\\":
            q = p
            while q < n and s[q] == "\\":
                q += 1
            slashes = q - p
            if q < n and s[q] == '"':
                arg.append("\\" * (slashes // 2))
                if slashes % 2:
                    arg.append('"')
                    p = q + 1
                else:
                    p = q  # the quote is handled below, as a delimiter
                continue
            arg.append("\\" * slashes)
            p = q
            continue
        if c == '"':
            if in_quotes:
                in_quotes = False
                if p + 1 < n and s[p + 1] == '"':  # "" in quotes: a literal " and quoting ends
                    arg.append('"')
                    p += 2
                    continue
            else:
                in_quotes = True
            p += 1
            continue
        if c in " \t" and not in_quotes:
            argv.append("".join(arg))
            arg = None
            p += 1
            continue
        arg.append(c)
        p += 1
    if arg is not None:
        argv.append("".join(arg))
    return argv


def commandline_to_argv(cmdline: str, *, rules: str = "ucrt") -> list[str]:
    """Split a Win32 command line into argv (argv[0], the program, included).

    rules="ucrt": the Microsoft C runtime (what python.exe and most programs use);
    rules="shell32": CommandLineToArgvW, which differs for `""` inside quotes and for a quoted
    argv[0] that is followed directly by more characters. For an empty string both give [''].
    """
    if "\0" in cmdline:
        raise ValueError("a Windows command line cannot contain NUL")
    if rules == "ucrt":
        return _split_ucrt(cmdline)
    if rules == "shell32":
        return _split_shell32(cmdline)
    raise ValueError(f"unknown rules {rules!r}: use 'ucrt' or 'shell32'")


def ps51_native_argv(
    exe: str, args: Sequence[str | None], *, rules: str = "ucrt", environ: Mapping[str, str] | None = None
) -> list[str]:
    """What the child sees as argv[1:] (Python: sys.argv[1:]) after `& $exe @args` in 5.1."""
    return commandline_to_argv(ps51_command_line(exe, args, environ=environ), rules=rules)[1:]


def ps51_survives(args: Sequence[str], *, rules: str = "ucrt", exe: str = "C:\\Windows\\py.exe") -> bool:
    """True when every argument reaches the child exactly as given (none split, merged,
    dropped or altered)."""
    return ps51_native_argv(exe, args, rules=rules) == list(args)
