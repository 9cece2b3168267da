"""Quoting tables: hostile arguments survive cmd.exe (batch and command line) and Win32 argv."""

from __future__ import annotations

import subprocess

import pytest

from npulab.quoting import (
    cmd_set,
    quote_argv,
    quote_cmd_arg,
    quote_cmd_line,
    quote_pwsh,
    quote_win_arg,
)
from tests.winemu import CmdSyntax, phase1, phase2, split_argv

HOSTILE = [
    "plain",
    "",
    "with space",
    "a&b",
    "VEN_1022&DEV_1502",
    "50%",
    "%PATH%",
    "100%%",
    "%~dp0",
    "%*",
    "^caret",
    "^",
    "(paren)",
    "x)y",
    "bang!",
    "!PATH!",
    "a|b<c>d",
    "C:\\Program Files (x86)\\模型\\model.pt",
    "C:\\Users\\Zoë\\Läbor & Co\\",
    "Ünïcödé ✓",
    'say "hi"',
    '"&"',
    "trailing\\",
    "C:\\dir with space\\",
    "\\\\server\\share\\x y",
    'back\\"quote',
    'back\\\\"quote & more',
    "tab\there",
    "^&^|%%!",
    "  leading and trailing  ",
]

ENV = {"PATH": "C:\\Windows", "NPULAB_PY": "C:\\env dir\\python.exe"}


@pytest.mark.parametrize("arg", HOSTILE)
def test_win_arg_round_trips(arg: str) -> None:
    assert split_argv(quote_win_arg(arg)) == [arg]


def test_argv_round_trips_as_a_whole() -> None:
    assert split_argv(quote_argv(HOSTILE)) == HOSTILE


@pytest.mark.parametrize("arg", HOSTILE)
def test_cmd_arg_in_batch_file(arg: str) -> None:
    line = f'"%NPULAB_PY%" -c pass {quote_cmd_arg(arg)} "x&y"'
    parsed = phase2(phase1(line, env=ENV, batch=True))
    assert split_argv(parsed) == [ENV["NPULAB_PY"], "-c", "pass", arg, "x&y"]


@pytest.mark.parametrize("arg", HOSTILE)
def test_cmd_arg_on_command_line(arg: str) -> None:
    line = f"prog {quote_cmd_arg(arg, batch=False)}"
    assert split_argv(phase2(phase1(line, env=ENV, batch=False))) == ["prog", arg]


@pytest.mark.parametrize("arg", HOSTILE)
def test_cmd_arg_through_a_wrapper_forwarding_all_args(arg: str) -> None:
    # cmd /c "wrapper.cmd <args>" parses the tail once; the wrapper's `"%NPULAB_PY%" %*` again.
    outer = phase2(
        phase1(f"w.cmd {quote_cmd_arg(arg, batch=False, passes=2)} z", env=ENV, batch=False)
    )
    tail = outer.removeprefix("w.cmd ")
    inner = phase2(phase1('"%NPULAB_PY%" %*', env=ENV, batch=True, tail=tail))
    assert split_argv(inner) == [ENV["NPULAB_PY"], arg, "z"]


def test_quote_cmd_line_joins_every_argument() -> None:
    line = quote_cmd_line(HOSTILE)
    assert split_argv(phase2(phase1(line, env=ENV, batch=True))) == HOSTILE


@pytest.mark.parametrize("arg", ["a&b", "(x)", "50%", 'say "a & b"'])
def test_the_model_rejects_naive_quoting(arg: str) -> None:
    """The emulator has teeth: Python's list2cmdline alone is not safe on a cmd line."""
    naive = subprocess.list2cmdline(["prog", arg])
    try:
        result = split_argv(phase2(phase1(naive, env={"x": "X"}, batch=True)))
    except CmdSyntax:
        return
    assert result != ["prog", arg]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_unrepresentable_arguments_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        quote_cmd_arg(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("C:\\a b\\c", 'set "X=C:\\a b\\c"'),
        ("C:\\R&D (old)\\100%", 'set "X=C:\\R&D (old)\\100%%"'),
        ("C:\\模型\\^x!", 'set "X=C:\\模型\\^x!"'),
    ],
)
def test_cmd_set_keeps_the_value_verbatim(value: str, expected: str) -> None:
    line = cmd_set("X", value)
    assert line == expected
    # What cmd stores: the text between `set "X=` and the closing quote after phase 1 and 2.
    parsed = phase2(phase1(line, env=ENV, batch=True))
    assert parsed == f'set "X={value}"'


@pytest.mark.parametrize(
    ("name", "value"), [("X", 'a"b'), ("1X", "v"), ("A B", "v"), ("X", "a\nb")]
)
def test_cmd_set_refuses_what_it_cannot_store(name: str, value: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        cmd_set(name, value)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("plain", "'plain'"),
        ("$env:PATH `n", "'$env:PATH `n'"),
        ("it's", "'it''s'"),
        ("curly \u2019 quote", "'curly \u2019\u2019 quote'"),
        ("C:\\Program Files (x86)\\模型 & co", "'C:\\Program Files (x86)\\模型 & co'"),
        ("", "''"),
    ],
)
def test_pwsh_literals(arg: str, expected: str) -> None:
    assert quote_pwsh(arg) == expected


@pytest.mark.parametrize("arg", [*HOSTILE[:17], "it's", "‘curly’ ‚low‛", "$(Remove-Item x)", "`$a"])
def test_pwsh_literal_parses_as_one_verbatim_string(arg: str) -> None:
    """tree-sitter-powershell sees exactly one single-quoted string: nothing expands or splits."""
    ts = pytest.importorskip("tree_sitter")
    tsp = pytest.importorskip("tree_sitter_powershell")
    parser = ts.Parser(ts.Language(tsp.language()))
    literal = quote_pwsh(arg)
    tree = parser.parse(f"Write-Output {literal}".encode())
    assert not tree.root_node.has_error
    found: list[str] = []

    def walk(node: ts.Node) -> None:
        if node.type == "verbatim_string_characters":
            found.append(node.text.decode())
        if node.type in ("variable", "sub_expression", "expandable_string_literal"):
            found.append(f"<{node.type}>")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    assert found == [literal]


def test_cmd_quoting_needs_at_least_one_parse_pass() -> None:
    with pytest.raises(ValueError, match="passes must be >= 1, got 0"):
        quote_cmd_arg("x", passes=0)
