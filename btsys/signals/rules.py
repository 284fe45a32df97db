"""A safe expression grammar for rule strategies: ``"rsi_14 < 30 and close > sma_200"``.

Expressions are parsed with :mod:`ast` (mode ``eval``) and only these nodes are accepted:

* names (a column of the feature frame, or ``<fn>_<window>`` of a library feature such as
  ``sma_200``, computed on the fly from the bars), numbers, ``True``/``False``;
* arithmetic ``+ - * / % **`` and unary ``- + not``;
* comparisons ``< <= > >= == !=`` (chains allowed: ``30 < rsi_14 < 70``);
* ``and`` / ``or``.

Everything else (attribute access, calls, subscripts, lambdas, comprehensions, strings, ...) is
rejected with :class:`RuleError` naming the construct and its column, and so is a rule over the size
limits (``MAX_RULE_CHARS``, ``MAX_RULE_NODES``, ``MAX_RULE_DEPTH``). The tree is evaluated by a
small interpreter over numpy arrays; Python's ``eval`` is never used. Every operation is
element-wise on the same bar, so a rule can never read a later bar. Comparisons with NaN (a
feature in its warm-up) are False.
"""

from __future__ import annotations

import ast
import operator
from typing import Callable, Dict, Iterable, Set

import numpy as np

from btsys.errors import ConfigError

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_WHAT = {
    ast.Attribute: "attribute access",
    ast.Call: "function calls",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.IfExp: "conditional expressions",
    ast.ListComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Starred: "starred expressions",
    ast.NamedExpr: "assignment expressions",
    ast.JoinedStr: "f-strings",
    ast.Await: "await",
    ast.Slice: "slices",
}


#: Limits of an expression: characters, AST nodes and nesting depth. Real rules are far smaller;
#: the limits keep a hostile or generated rule from exhausting the parser or the interpreter's stack.
MAX_RULE_CHARS = 2000
MAX_RULE_NODES = 500
MAX_RULE_DEPTH = 50

_STRUCTURE = (
    ast.Expression,
    ast.Load,
    ast.And,
    ast.Or,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BoolOp,
    ast.UnaryOp,
    ast.BinOp,
    ast.Compare,
)


class RuleError(ConfigError):
    """An expression outside the grammar, over the limits, or naming something that is not a feature."""


def _fail(expr: str, node: ast.AST, what: str) -> RuleError:
    col = getattr(node, "col_offset", None)
    where = f" at column {col + 1}" if col is not None else ""
    return RuleError(
        f"rule {_quote(expr)}: {what}{where} is not allowed; a rule may use only feature names, "
        f"numbers, comparisons, and/or/not and + - * / % **"
    )


def _quote(expr: str, width: int = 80) -> str:
    """``expr`` quoted for a message, shortened (a rule may be up to ``MAX_RULE_CHARS`` long)."""
    return repr(expr if len(expr) <= width else expr[: width - 3] + "...")


def _parse(expr: str) -> ast.Expression:
    """``ast.parse`` within the size and depth limits."""
    if not isinstance(expr, str) or not expr.strip():
        raise RuleError(f"rule must be a non-empty string, got {expr!r}")
    if len(expr) > MAX_RULE_CHARS:
        raise RuleError(f"rule is too long ({len(expr)} characters, at most {MAX_RULE_CHARS})")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise RuleError(f"rule {_quote(expr)}: syntax error: {e.msg} at column {e.offset}") from None
    except (RecursionError, MemoryError):  # the parser's own stack: nesting far over the limit
        raise RuleError(f"rule {_quote(expr)}: nested too deeply (at most {MAX_RULE_DEPTH} levels)") from None
    nodes, stack = 0, [(tree, 1)]
    while stack:  # iterative: the check itself must not recurse as deep as the rule
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_RULE_DEPTH:
            raise RuleError(f"rule {_quote(expr)}: nested too deeply (more than {MAX_RULE_DEPTH} levels)")
        if nodes > MAX_RULE_NODES:
            raise RuleError(f"rule {_quote(expr)}: too large (more than {MAX_RULE_NODES} syntax nodes)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _check_operator(expr: str, node: ast.AST) -> None:
    if isinstance(node, ast.UnaryOp) and type(node.op) not in (ast.Not, ast.USub, ast.UAdd):
        raise _fail(expr, node, f"unary operator {type(node.op).__name__}")
    if isinstance(node, ast.BinOp) and type(node.op) not in _BINOPS:
        raise _fail(expr, node, f"operator {type(node.op).__name__}")
    if isinstance(node, ast.Compare) and any(type(o) not in _CMPOPS for o in node.ops):
        bad = next(type(o).__name__ for o in node.ops if type(o) not in _CMPOPS)
        raise _fail(expr, node, f"comparison {bad}")


def _check_name(expr: str, node: ast.Name, is_known, names_set) -> None:
    if node.id.startswith("_"):
        raise _fail(expr, node, f"name {node.id!r} (private names)")
    if is_known is not None and not is_known(node.id):
        avail = f"; available columns: {sorted(names_set)}" if names_set is not None else ""
        raise RuleError(
            f"rule {_quote(expr)}: {node.id!r} is not a feature (not a column of the "
            f"frame nor a library feature like sma_200){avail}"
        )


def _check_node(expr: str, node: ast.AST, is_known, names_set) -> None:
    """Raise :class:`RuleError` unless ``node`` belongs to the grammar (and names a known feature)."""
    if isinstance(node, _STRUCTURE):
        _check_operator(expr, node)
    elif isinstance(node, ast.Name):
        _check_name(expr, node, is_known, names_set)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (bool, int, float)):
            raise _fail(expr, node, f"constant {node.value!r} (only numbers)")
    elif type(node) not in _BINOPS and type(node) not in _CMPOPS:
        raise _fail(expr, node, _WHAT.get(type(node), type(node).__name__))


def parse_rule(expr: str, known: Callable[[str], bool] | Iterable[str] | None = None) -> ast.Expression:
    """Parse and validate ``expr``; ``known(name)`` (or a set of names) says which names exist.

    Returns the checked :class:`ast.Expression`. Raises :class:`RuleError` for syntax errors, rules
    over the limits (``MAX_RULE_CHARS`` characters, ``MAX_RULE_NODES`` nodes, ``MAX_RULE_DEPTH``
    levels), nodes outside the grammar and unknown names (the message lists the available columns
    when a set was given).
    """
    tree = _parse(expr)
    names_set: Set[str] | None = None
    if known is not None and not callable(known):
        names_set = set(known)
        is_known = names_set.__contains__
    else:
        is_known = known
    for node in ast.walk(tree):
        _check_node(expr, node, is_known, names_set)
    return tree


def rule_names(expr: str) -> list[str]:
    """The names a (grammatical) rule refers to, in first-use order."""
    tree = parse_rule(expr)
    seen: Dict[str, None] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            seen.setdefault(node.id)
    return list(seen)


def _truth(x):
    """Element-wise truth of a value: non-zero and not NaN."""
    a = np.asarray(x)
    if a.dtype == np.bool_:
        return a
    with np.errstate(invalid="ignore"):
        return (a != 0) & ~np.isnan(a.astype(np.float64))


def _compare(node: ast.Compare, env: Dict[str, np.ndarray]):
    """A comparison chain ``a < b <= c`` as ``(a < b) & (b <= c)``."""
    left = np.asarray(_eval(node.left, env), dtype=np.float64)
    out = None
    for op, comp in zip(node.ops, node.comparators, strict=True):
        right = np.asarray(_eval(comp, env), dtype=np.float64)
        r = _CMPOPS[type(op)](left, right)
        out = r if out is None else out & r
        left = right
    return out


def _eval(node: ast.AST, env: Dict[str, np.ndarray]):
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return ~_truth(v)
        v = np.asarray(v, dtype=np.float64)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp):
        a = np.asarray(_eval(node.left, env), dtype=np.float64)
        b = np.asarray(_eval(node.right, env), dtype=np.float64)
        return _BINOPS[type(node.op)](a, b)
    if isinstance(node, ast.Compare):
        return _compare(node, env)
    if isinstance(node, ast.BoolOp):
        vals = [_truth(_eval(v, env)) for v in node.values]
        out = vals[0]
        for v in vals[1:]:
            out = (out & v) if isinstance(node.op, ast.And) else (out | v)
        return out
    raise RuleError(f"internal: unexpected node {type(node).__name__}")  # parse_rule rejects these


def evaluate_rule(expr: str, columns: Dict[str, np.ndarray], n: int) -> np.ndarray:
    """Evaluate ``expr`` over aligned arrays (one per name) into a bool array of length ``n``."""
    tree = parse_rule(expr, set(columns))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = _truth(_eval(tree, columns))
    out = np.broadcast_to(out, (n,)).copy()
    return out.astype(bool)
