"""Sandboxed calculator tool that the model calls during generation.

The model writes ``<|python_start|>expr<|python_end|>`` and the engine injects the result of ``expr``.
The expression is MODEL-GENERATED text, so it is treated as hostile: it is never handed to Python's
``eval``/``exec``/``compile``. Instead it is parsed with ``ast.parse(..., mode="eval")`` and the syntax
tree is interpreted here against a whitelist of node types. There are no builtins, no names other than a
fixed table of pure functions, and no attribute access; every size (text, tree, integers, strings) and the
wall-clock time are bounded.

The language:

* literals: ``int``, ``float`` and ``str`` (no bool, None, bytes, complex, f-strings);
* unary ``+ -`` and binary ``+ - * / // % **`` on numbers, with parentheses;
* strings: indexing and slicing (``"word"[::-1]``), ``str + str`` and ``str * int``;
* calls by bare name, positional arguments only, to ``count(text, sub)`` (non-overlapping, like
  ``str.count``), ``len(text)``, ``abs(x)``, ``round(x[, ndigits])``, ``min(a, b, ...)`` and
  ``max(a, b, ...)``.

Everything else (names, attributes, comparisons, boolean operators, conditionals, containers, tuples,
comprehensions, lambdas, walrus, keyword or starred arguments) is rejected with a ``CalculatorError``.
"""

from __future__ import annotations

import ast
import math
import time
import warnings
from collections.abc import Callable

# Bounds. Each one is small enough that no single operation can take noticeable time or memory.
MAX_EXPRESSION_CHARS = 300  # checked on the stripped text, before parsing
MAX_NODES = 200  # expression nodes in the syntax tree (operators and contexts are not counted)
MAX_DEPTH = 40  # nesting depth of the syntax tree (all nodes)
MAX_INT = 10**60  # bound on |value| for every integer, literal or intermediate
MAX_EXPONENT = 1000  # bound on |exponent| for ``**``
MAX_POW_BITS = 200  # integer ``a ** b`` is refused before computing when b * log2(|a|) exceeds this
MAX_STR_CHARS = 1000  # bound on the length of every string, literal or intermediate
MAX_ROUND_DIGITS = 100  # bound on |ndigits| in ``round(x, ndigits)``
DEFAULT_TIME_LIMIT_S = 1.0  # a last line of defence: the size bounds keep every call far below it

Number = int | float
Value = int | float | str

_NAME_PREVIEW = 30  # user text echoed in error messages is cut to this many characters


class CalculatorError(ValueError):
    """The expression was rejected or could not be evaluated; the message is short and human-readable."""


def calculate(expression: str, *, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> str:
    """Evaluate ``expression`` in the sandbox and return the result as text; raise ``CalculatorError``."""
    start = time.perf_counter()
    if not (isinstance(time_limit_s, int | float) and time_limit_s > 0):
        raise ValueError(f"time_limit_s must be a positive number, got {time_limit_s!r}")
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, not {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression too long ({len(text)} > {MAX_EXPRESSION_CHARS} characters)")
    deadline = start + time_limit_s
    tree = _parse(text)
    _check_tree(tree, deadline)
    try:
        value = _Evaluator(deadline).evaluate(tree.body)
    except RecursionError:
        raise CalculatorError("expression too deeply nested") from None
    return format_result(value)


def run_calculator(expression: str) -> str:
    """What the engine injects: the result text, or ``"error: <message>"``. Never raises."""
    try:
        return calculate(expression)
    except CalculatorError as exc:
        return f"error: {exc}"
    except Exception as exc:  # defensive last resort: a tool call must never take the engine down
        return f"error: internal error ({type(exc).__name__}: {_preview(str(exc), 100)})"


def format_result(value: Value) -> str:
    """Format a result: ints as-is, integral floats below 1e15 as ints, other floats with 10 significant
    digits, strings without quotes."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".10g")
    return str(value)


# --- parsing and static checks --------------------------------------------------------------------------


def _parse(text: str) -> ast.Expression:
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for "1(2)" or invalid escapes: not our output
            warnings.simplefilter("ignore")
            return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        detail = f" ({_preview(exc.msg, 60)})" if exc.msg and exc.msg != "invalid syntax" else ""
        raise CalculatorError(f"invalid syntax{detail}") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("expression too deeply nested") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise CalculatorError(f"invalid expression ({_preview(str(exc), 60)})") from None


_OPERATOR_NODES = (ast.Load, ast.UAdd, ast.USub, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
                   ast.Pow)
_EXPRESSION_NODES = (ast.Constant, ast.UnaryOp, ast.BinOp, ast.Subscript, ast.Slice, ast.Call, ast.Name)
_FRIENDLY_NAMES = {
    ast.Tuple: "tuples are not allowed (write 1000, not 1,000)",
    ast.Attribute: "attribute access is not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.BoolOp: "boolean operators are not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.NamedExpr: "assignment expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.keyword: "keyword arguments are not allowed",
    ast.List: "lists are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
}


def _check_tree(tree: ast.Expression, deadline: float) -> None:
    """Reject oversized trees and any node outside the whitelist, before evaluating anything.

    Iterative, so that a pathologically deep tree cannot exhaust the Python stack here.
    """
    nodes = 0
    stack: list[tuple[ast.AST, int, ast.AST | None]] = [(tree.body, 1, None)]
    while stack:
        node, depth, parent = stack.pop()
        if time.perf_counter() > deadline:
            raise CalculatorError("time limit exceeded")
        if depth > MAX_DEPTH:
            raise CalculatorError(f"expression too deeply nested (more than {MAX_DEPTH} levels)")
        if isinstance(node, ast.expr):
            nodes += 1
            if nodes > MAX_NODES:
                raise CalculatorError(f"expression too complex (more than {MAX_NODES} nodes)")
        _check_node(node, parent)
        stack.extend((child, depth + 1, node) for child in ast.iter_child_nodes(node))


def _check_node(node: ast.AST, parent: ast.AST | None) -> None:
    if isinstance(node, _OPERATOR_NODES):
        return
    if not isinstance(node, _EXPRESSION_NODES):
        message = _FRIENDLY_NAMES.get(type(node), f"unsupported syntax: {type(node).__name__}")
        raise CalculatorError(message)
    if isinstance(node, ast.Constant):
        _check_value(_constant(node.value))
    elif isinstance(node, ast.Name):
        if not (isinstance(parent, ast.Call) and parent.func is node):
            raise CalculatorError(f"name {_preview(node.id)!r} is not allowed (no variables)")
    elif isinstance(node, ast.Call):
        if node.keywords:
            raise CalculatorError("keyword arguments are not allowed")
        if isinstance(node.func, ast.Attribute):
            raise CalculatorError("attribute access is not allowed")
        if not isinstance(node.func, ast.Name):
            raise CalculatorError("only the built-in functions can be called, by name")
        if node.func.id not in _FUNCTIONS:
            raise CalculatorError(f"unknown function {_preview(node.func.id)!r} (allowed: {_FUNCTION_LIST})")
    elif isinstance(node, ast.Slice) and not isinstance(parent, ast.Subscript):
        raise CalculatorError("slices are only allowed inside [...]")


def _constant(value: object) -> Value:
    if type(value) in (int, float, str):
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        raise CalculatorError("booleans are not supported")
    if isinstance(value, bytes):
        raise CalculatorError("bytes are not supported")
    if isinstance(value, complex):
        raise CalculatorError("complex numbers are not supported")
    raise CalculatorError(f"unsupported constant: {_preview(repr(value))}")


# --- evaluation -------------------------------------------------------------------------------------------


class _Evaluator:
    """Recursive interpreter over a tree already checked by ``_check_tree`` (depth <= MAX_DEPTH)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def evaluate(self, node: ast.AST) -> Value:
        if time.perf_counter() > self.deadline:
            raise CalculatorError("time limit exceeded")
        if isinstance(node, ast.Constant):
            return _check_value(_constant(node.value))
        if isinstance(node, ast.UnaryOp):
            return _unary(node.op, self.evaluate(node.operand))
        if isinstance(node, ast.BinOp):
            left = self.evaluate(node.left)
            right = self.evaluate(node.right)
            return _check_value(_binary(node.op, left, right))
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            function = _FUNCTIONS.get(node.func.id)
            if function is None:
                raise CalculatorError(f"unknown function {_preview(node.func.id)!r}")
            args = [self.evaluate(arg) for arg in node.args]
            return _check_value(function(args))
        raise CalculatorError(f"unsupported syntax: {type(node).__name__}")

    def _subscript(self, node: ast.Subscript) -> str:
        value = self.evaluate(node.value)
        if not isinstance(value, str):
            raise CalculatorError(f"only strings can be indexed, not {_type_name(value)}")
        if isinstance(node.slice, ast.Slice):
            lower, upper, step = (None if part is None else self._index(part)
                                  for part in (node.slice.lower, node.slice.upper, node.slice.step))
            if step == 0:
                raise CalculatorError("slice step cannot be zero")
            return value[lower:upper:step]
        index = self._index(node.slice)
        if not -len(value) <= index < len(value):
            raise CalculatorError("string index out of range")
        return value[index]

    def _index(self, node: ast.AST) -> int:
        index = self.evaluate(node)
        if type(index) is not int:
            raise CalculatorError(f"string indices must be integers, not {_type_name(index)}")
        return index


def _unary(op: ast.unaryop, operand: Value) -> Number:
    symbol = "-" if isinstance(op, ast.USub) else "+"
    if not _is_number(operand):
        raise CalculatorError(f"bad operand type for unary {symbol}: {_type_name(operand)}")
    if isinstance(op, ast.USub):
        return -operand  # type: ignore[operator]
    if isinstance(op, ast.UAdd):
        return +operand  # type: ignore[operator]
    raise CalculatorError(f"unsupported operator: {type(op).__name__}")


def _power(base: Number, exponent: Number) -> Number:
    """``base ** exponent`` with its size estimated before it is computed."""
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent too large (|exponent| > {MAX_EXPONENT})")
    if (
        type(base) is int
        and type(exponent) is int
        and exponent > 0
        and abs(base) > 1
        and exponent * math.log2(abs(base)) > MAX_POW_BITS
    ):
        raise CalculatorError("result too large")
    return base**exponent  # floats: OverflowError / ZeroDivisionError are handled by the caller


_ARITHMETIC: dict[type[ast.operator], tuple[str, Callable[[Number, Number], Number]]] = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: a / b),
    ast.FloorDiv: ("//", lambda a, b: a // b),
    ast.Mod: ("%", lambda a, b: a % b),
    ast.Pow: ("**", _power),
}


def _binary(op: ast.operator, left: Value, right: Value) -> Value:
    if type(op) not in _ARITHMETIC:
        raise CalculatorError(f"unsupported operator: {type(op).__name__}")
    symbol, function = _ARITHMETIC[type(op)]
    if _is_number(left) and _is_number(right):
        try:
            return function(left, right)  # type: ignore[arg-type]
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("number too large") from None
    # Strings: only concatenation and repetition (never str % ..., which is printf-style formatting).
    if symbol == "+" and isinstance(left, str) and isinstance(right, str):
        _check_length(len(left) + len(right))
        return left + right
    if symbol == "*":
        if isinstance(left, str) and type(right) is int:
            text, times = left, right
        elif type(left) is int and isinstance(right, str):
            text, times = right, left
        else:
            raise _operand_error(symbol, left, right)
        if times > 0:
            _check_length(len(text) * times)  # before multiplying
        return text * times
    raise _operand_error(symbol, left, right)


def _check_value(value: object) -> Value:
    """Every value produced (literal, intermediate or final) goes through here."""
    if type(value) is int:
        if abs(value) > MAX_INT:
            raise CalculatorError("integer too large (limit 10**60)")
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise CalculatorError("number too large")
        return value
    if type(value) is str:
        _check_length(len(value))
        return value
    if isinstance(value, complex):
        raise CalculatorError("complex result (e.g. a fractional power of a negative number)")
    raise CalculatorError(f"unsupported value of type {_type_name(value)}")


def _check_length(length: int) -> None:
    if length > MAX_STR_CHARS:
        raise CalculatorError(f"string too long (limit {MAX_STR_CHARS} characters)")


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _type_name(value: object) -> str:
    return type(value).__name__


def _operand_error(symbol: str, left: Value, right: Value) -> CalculatorError:
    types = f"{_type_name(left)} and {_type_name(right)}"
    return CalculatorError(f"unsupported operand types for {symbol}: {types}")


def _preview(text: str, limit: int = _NAME_PREVIEW) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the function table -----------------------------------------------------------------------------------


def _arity(name: str, args: list[Value], low: int, high: int | None) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        if high is None:
            expected = f"at least {low}"
        elif low == high:
            expected = str(low)
        else:
            expected = f"{low} to {high}"
        raise CalculatorError(f"{name}() takes {expected} arguments ({len(args)} given)")


def _require_str(name: str, value: Value) -> str:
    if not isinstance(value, str):
        raise CalculatorError(f"{name}() needs a string, not {_type_name(value)}")
    return value


def _require_number(name: str, value: Value) -> Number:
    if not _is_number(value):
        raise CalculatorError(f"{name}() needs a number, not {_type_name(value)}")
    return value  # type: ignore[return-value]


def _fn_count(args: list[Value]) -> int:
    _arity("count", args, 2, 2)
    return _require_str("count", args[0]).count(_require_str("count", args[1]))


def _fn_len(args: list[Value]) -> int:
    _arity("len", args, 1, 1)
    return len(_require_str("len", args[0]))


def _fn_abs(args: list[Value]) -> Number:
    _arity("abs", args, 1, 1)
    return abs(_require_number("abs", args[0]))


def _fn_round(args: list[Value]) -> Number:
    _arity("round", args, 1, 2)
    value = _require_number("round", args[0])
    if len(args) == 1:
        return round(value)
    ndigits = args[1]
    if type(ndigits) is not int:
        raise CalculatorError(f"round() needs an integer number of digits, not {_type_name(ndigits)}")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round() digits out of range (|ndigits| > {MAX_ROUND_DIGITS})")
    return round(value, ndigits)


def _extremum(name: str, pick: Callable[..., Value], args: list[Value]) -> Value:
    _arity(name, args, 2, None)
    if all(_is_number(arg) for arg in args) or all(isinstance(arg, str) for arg in args):
        return pick(args)
    raise CalculatorError(f"{name}() needs all numbers or all strings")


_FUNCTIONS: dict[str, Callable[[list[Value]], Value]] = {
    "count": _fn_count,
    "len": _fn_len,
    "abs": _fn_abs,
    "round": _fn_round,
    "min": lambda args: _extremum("min", min, args),
    "max": lambda args: _extremum("max", max, args),
}
_FUNCTION_LIST = ", ".join(_FUNCTIONS)
