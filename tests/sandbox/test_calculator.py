"""Tests for the sandboxed calculator: correct results, and attack strings that must all be refused fast."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from components.sandbox import calculator
from components.sandbox.calculator import (
    MAX_EXPRESSION_CHARS,
    CalculatorError,
    calculate,
    format_result,
    run_calculator,
)

CORRECT = [
    # the examples from the issue
    ("48/2", "24"),
    ("3*4+2", "14"),
    ("0.5*12", "6"),
    ("7/2", "3.5"),
    ('count("strawberry", "r")', "3"),
    ('"ubiquitous"[::3]', "uqts"),  # indices 0, 3, 6, 9
    ('len("hello")', "5"),
    ("2**10", "1024"),
    ("100-(20+30)", "50"),
    # precedence and associativity
    ("2+3*4", "14"),
    ("(2+3)*4", "20"),
    ("2**3**2", "512"),
    ("-2**2", "-4"),
    ("(-2)**2", "4"),
    ("10-3-2", "5"),
    ("100/10/5", "2"),
    ("2*-3", "-6"),
    ("--5", "5"),
    ("+-+5", "-5"),
    # integer and float arithmetic
    ("17//5", "3"),
    ("-17//5", "-4"),
    ("17%5", "2"),
    ("-7%3", "2"),
    ("7.5//2", "3"),
    ("5.5%2", "1.5"),
    ("1/3", "0.3333333333"),
    ("2/3", "0.6666666667"),
    ("0.1+0.2", "0.3"),
    ("1.5*1.5", "2.25"),
    ("-0.0", "0"),
    ("3.0", "3"),
    ("1e3", "1000"),
    ("1e15", "1e+15"),
    ("1e14", "100000000000000"),
    ("1.5e-7", "1.5e-07"),
    ("2**-1", "0.5"),
    ("2**0.5", "1.414213562"),
    ("4**0.5", "2"),
    ("0**0", "1"),
    ("10**60", str(10**60)),
    ("-(10**60)", str(-(10**60))),
    ("12345678901234567890*10", "123456789012345678900"),
    ("123456789.123", "123456789.1"),
    ("  6 * 7  ", "42"),
    ("1_000 + 5", "1005"),
    ("0x10 + 0b11", "19"),
    # strings
    ('"word"[::-1]', "drow"),
    ('"abc"[0]', "a"),
    ('"abc"[-1]', "c"),
    ('"abcdef"[1:4]', "bcd"),
    ('"abcdef"[10:]', ""),
    ('"abc" + "def"', "abcdef"),
    ('"ab" * 3', "ababab"),
    ('3 * "ab"', "ababab"),
    ('"ab" * -2', ""),
    ("'single'", "single"),
    ('"a" "b"', "ab"),
    ('"abc"[1+1]', "c"),
    # functions
    ('count("banana", "an")', "2"),
    ('count("aaaa", "aa")', "2"),  # non-overlapping, like str.count
    ('count("mississippi", "s")', "4"),
    ('count("abc", "z")', "0"),
    ('len("")', "0"),
    ('len("straw" + "berry")', "10"),
    ("abs(-3)", "3"),
    ("abs(-2.5)", "2.5"),
    ("round(2.5)", "2"),
    ("round(3.14159, 2)", "3.14"),
    ("round(1234, -2)", "1200"),
    ("round(7/3, 3)", "2.333"),
    ("min(3, 1, 2)", "1"),
    ("max(3, 1.5)", "3"),
    ("max(-1, -2)", "-1"),
    ('min("b", "a")', "a"),
    ('max(len("abc"), count("aaa", "a") * 2)', "6"),
    ("abs(round(-2.567, 1))", "2.6"),
]


@pytest.mark.parametrize(("expression", "expected"), CORRECT)
def test_correct_results(expression: str, expected: str) -> None:
    assert calculate(expression) == expected
    assert run_calculator(expression) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (24, "24"),
        (24.0, "24"),
        (-3.0, "-3"),
        (3.5, "3.5"),
        (1e15, "1e+15"),
        (123456789012345.0, "123456789012345"),
        (2 / 3, "0.6666666667"),
        ("text", "text"),
        ("", ""),
    ],
)
def test_format_result(value: int | float | str, expected: str) -> None:
    assert format_result(value) == expected


ATTACKS = [
    # imports
    "__import__('os').system('ls')",
    "import os",
    "__import__",
    "(yield 1)",
    # dunder and attribute chains
    "().__class__.__bases__[0].__subclasses__()",
    '"".__class__',
    "(1).real",
    '"a".count("a")',
    "'{}'.format(1)",
    "''.join('ab')",
    # names and builtins
    "open",
    "open('/etc/passwd')",
    "exec('1')",
    "eval('1+1')",
    "globals()",
    "locals()",
    "vars()",
    "getattr(1, 'real')",
    "print(1)",
    "compile('1', '', 'eval')",
    "breakpoint()",
    "input()",
    "x",
    "x + 1",
    "__builtins__",
    "True",
    "None",
    "...",
    # huge numbers
    "9**9**9",
    "2**100000",
    "10**10**10",
    "(-2)**99999",
    "10**61",
    "10**60 * 10",
    "10**60 + 1",
    "2**1000.5",
    "10.0**400",
    "1e308*10",
    "1e999",
    "-1e999",
    "10**4301",  # would also hit the int-to-str digit limit
    "9" * MAX_EXPRESSION_CHARS,  # very long digit literal
    "round(1e300)",
    "round(5, -10**9)",
    "round(1.5, 10**9)",
    "1 << 10**9",
    # huge strings
    '"a"*10**9',
    '"ab"*100000',
    '10**9*"a"',
    '("a"*1000)+"b"',
    '"(" * 5000 + "1" + ")" * 5000',
    "'%999999999d' % 1",
    "'%s' % 'a'",
    # too long / deep nesting
    "(" * 5000 + "1" + ")" * 5000,
    "1+" * 200 + "1",
    "-" * 295 + "1",
    "-" * (MAX_EXPRESSION_CHARS - 1) + "1",
    "(1+" * 60 + "1" + ")" * 60,
    "(-(" * 45 + "1" + "))" * 45,
    "[" * 140 + "]" * 140,
    "abs(" * 45 + "1" + ")" * 45,
    '"a"' + "[0]" * 60,
    "+".join(["1"] * 149),  # 297 chars, a left-leaning chain 148 deep
    "min(" + ",".join(["--1"] * 73) + ")",  # 296 chars, shallow, but more than MAX_NODES nodes
    # endless loops, comprehensions, lambdas, walrus
    "[x for x in iter(int, 1)]",
    "sum(range(10**12))",
    "(x for x in range(10))",
    "{x: x for x in 'ab'}",
    "{x for x in 'ab'}",
    "(lambda: 1)()",
    "(lambda f: f(f))(lambda f: f(f))",
    "(y := 5)",
    "max(*'abc')",
    # f-strings, bytes, other literals and syntax
    "f'{1+1}'",
    "f'{().__class__}'",
    "b'abc'",
    "1j",
    "[1, 2]",
    "{1: 2}",
    "{1}",
    "1, 2",
    "1,000 + 5",
    "1 if 1 else 2",
    "1 < 2",
    "1 == 1",
    "1 and 2",
    "not 1",
    "~1",
    "1 & 3",
    "1 @ 2",
    "await x",
    "1 = 1",
    "(1",
    # keyword arguments and bad calls
    "round(1.5, ndigits=1)",
    "max(1, key=abs)",
    "len(1)",
    'len("a", "b")',
    'count("a")',
    "count(1, 2)",
    "min(1)",
    'min(1, "a")',
    "abs('a')",
    "round(1.5, 0.5)",
    "len()(1)",
    "(1)(2)",
    '"abc"[0](1)',
    # type errors, zero division, domain errors
    "1/0",
    "1//0",
    "1%0",
    "1.0/0.0",
    "0**-1",
    "0.0**-1",
    "(-8)**0.5",
    "'a' + 1",
    "'a' - 'a'",
    "-'a'",
    "'a' * 1.5",
    "'a' * 'b'",
    "'a'[10]",
    "'a'[10**60]",
    "'abc'[::0]",
    "'abc'[1.5]",
    "'abc'['a']",
    "(1)[0]",
    "'abc'[:'a']",
    # empty and odd text
    "",
    "   \n\t ",
    "\x00",
    "1\x00",
    "\\",
]


def test_enough_attacks() -> None:
    assert len(ATTACKS) >= 30
    assert len(set(ATTACKS)) == len(ATTACKS)


@pytest.mark.parametrize("attack", ATTACKS, ids=[f"attack{i}" for i in range(len(ATTACKS))])
def test_attack_is_refused_fast(attack: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError) as excinfo:
        calculate(attack)
    assert str(excinfo.value)  # a human-readable message
    assert len(str(excinfo.value)) < 200
    output = run_calculator(attack)
    assert output.startswith("error: ")
    assert "internal error" not in output
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("value", [None, 42, 1.5, b"1+1", ["1"], {"a": 1}])
def test_non_string_input(value: object) -> None:
    with pytest.raises(CalculatorError, match="must be a string"):
        calculate(value)  # type: ignore[arg-type]
    assert run_calculator(value).startswith("error: ")  # type: ignore[arg-type]


def test_attacks_do_not_crash_the_process() -> None:
    """A crash (segfault, stack overflow) would kill the process: run every attack in a child process."""
    script = (
        "import json, sys\n"
        "from components.sandbox.calculator import run_calculator\n"
        "print(json.dumps([run_calculator(a) for a in json.load(sys.stdin)]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(ATTACKS), capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    outputs = json.loads(completed.stdout)
    assert len(outputs) == len(ATTACKS)
    assert all(output.startswith("error: ") for output in outputs)


def test_error_messages_are_helpful() -> None:
    assert run_calculator("1,000 + 5").startswith("error: tuples are not allowed")
    assert run_calculator("open('x')") == (
        "error: unknown function 'open' (allowed: count, len, abs, round, min, max)"
    )
    assert run_calculator("x") == "error: name 'x' is not allowed (no variables)"
    assert run_calculator("().__class__") == "error: attribute access is not allowed"
    assert run_calculator("1/0") == "error: division by zero"
    assert run_calculator("round(1.5, ndigits=1)") == "error: keyword arguments are not allowed"
    assert "too long" in run_calculator("1" * (MAX_EXPRESSION_CHARS + 1))
    assert "too long" not in run_calculator("1" + " " * 1000)  # surrounding whitespace is stripped first
    assert run_calculator("  " + "1" * 5 + "  ") == "11111"


def test_long_name_is_cut_in_message() -> None:
    message = run_calculator("a" * 250)
    assert message.startswith("error: name ")
    assert len(message) < 80


def test_limits_are_inclusive() -> None:
    assert calculate("1" * 10 + " " * 0 + "+" + "0" * (MAX_EXPRESSION_CHARS - 11)) == "1111111111"
    assert calculate('"a" * 1000') == "a" * 1000
    assert calculate("2**199") == str(2**199)
    assert calculate("1**1000") == "1"
    assert calculate("2.0**-1000") == format(2.0**-1000, ".10g")
    assert calculate("-" * 38 + "1") == "1"  # 38 unary minus + the literal: depth 39


def test_redundant_parentheses_are_harmless() -> None:
    """Parentheses alone add no tree depth: 149 levels (the parser's limit is 200) still evaluate, fast."""
    start = time.perf_counter()
    assert calculate("(" * 149 + "1" + ")" * 149) == "1"
    assert calculate("(" * 148 + "-1" + ")" * 148) == "-1"
    assert time.perf_counter() - start < 1.0
    assert run_calculator("(" * 200 + "1" + ")" * 200).startswith("error: ")  # over the length limit


def test_time_limit() -> None:
    with pytest.raises(CalculatorError, match="time limit"):
        calculate("1+1", time_limit_s=1e-9)
    assert calculate("1+1", time_limit_s=10.0) == "2"
    with pytest.raises(ValueError):
        calculate("1+1", time_limit_s=0)


def test_run_calculator_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(expression: str, **_: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(calculator, "calculate", broken)
    assert run_calculator("1+1") == "error: internal error (RuntimeError: boom)"


def _expected_format(value: int | float) -> str:
    """The formatting rules, restated independently of the implementation."""
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".10g")
    return str(value)


def _random_expression(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        literal = str(rng.randint(0, 9))
        if rng.random() < 0.15:
            literal += ".5"
        return f"-{literal}" if rng.random() < 0.15 else literal
    if rng.random() < 0.15:
        return f"({_random_expression(rng, depth - 1)}) ** {rng.randint(0, 2)}"
    op = rng.choice(["+", "-", "*", "/", "//", "%"])
    left = _random_expression(rng, depth - 1)
    right = _random_expression(rng, depth - 1)
    expression = f"{left} {op} {right}"
    return f"({expression})" if rng.random() < 0.5 else expression


def test_matches_python_on_random_arithmetic() -> None:
    rng = random.Random(0)
    errors = 0
    for _ in range(200):
        expression = _random_expression(rng, 4)
        assert len(expression) <= MAX_EXPRESSION_CHARS
        try:
            expected = _expected_format(eval(expression, {"__builtins__": {}}))  # trusted, generated here
        except ZeroDivisionError:
            errors += 1
            with pytest.raises(CalculatorError, match="division by zero"):
                calculate(expression)
            continue
        assert calculate(expression) == expected, expression
    assert errors < 100  # most expressions evaluate
