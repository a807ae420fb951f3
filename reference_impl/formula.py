"""lme4's formula language, parsed — never evaluated (spec §1).

A hand-written tokenizer and precedence-climbing parser turn the string into an R-like call tree;
`parse_formula` then reads that tree as a model: response, fixed terms, offsets and random-effects
terms (with `||` and `a/b` expanded as lme4's `expandDoubleVerts`/`findbars` do). Anything outside
the grammar raises `FormulaError` naming the token and its position; `Formula.to_r()` rebuilds a
canonical R string from the tree, so R only ever sees what this grammar allows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import FormulaError, ModelError

FUNCTIONS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}
SPECIAL = ("I", "offset", "cbind")
# a backticked name (R's non-syntactic column names, `x y`) is only ever a column name; no
# backslash escapes, control characters or backticks inside it
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z.][A-Za-z0-9._]*)"
                    r"|`(?P<quoted>[^`\\\x00-\x1f\x7f]+)`|(?P<op>\|\||[~+\-*/^:|(),]))")
_QUOTED = re.compile(r"`[^`\\\x00-\x1f\x7f]+`")
_SYNTACTIC = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*")
_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE",
             "NULL", "Inf", "NaN", "NA", "in"}
# R's precedence, lowest first; `^` is right-associative
_BINARY = {"~": 1, "|": 2, "||": 2, "+": 3, "-": 3, "*": 4, "/": 4, ":": 6, "^": 8}
_UNARY_MINUS = 7


@dataclass(frozen=True)
class Node:
    """A call (`op` with `args`), a column `Name` (op = "name") or a number (op = "num")."""

    op: str
    args: tuple = ()
    value: object = None

    def deparse(self, parent: int = 0) -> str:
        """R's deparse: spaces around + - * / ~ |, none around ^ and :."""
        if self.op == "name":
            syntactic = _SYNTACTIC.fullmatch(self.value) and self.value not in _RESERVED
            return self.value if syntactic else f"`{self.value}`"
        if self.op == "num":
            return f"{self.value:.15g}"
        if self.op == "call":
            fname, *args = self.args
            return f"{fname}({', '.join(a.deparse() for a in args)})"
        if self.op == "paren":
            return f"({self.args[0].deparse()})"
        if self.op == "neg":
            return f"-{self.args[0].deparse(_UNARY_MINUS)}"
        prec = _BINARY[self.op]
        sep = self.op if self.op in "^:" else f" {self.op} "
        text = self.args[0].deparse(prec) + sep + self.args[1].deparse(prec + 1)
        return f"({text})" if prec < parent else text


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    for m in _QUOTED.finditer(text):
        if text[m.end():].lstrip().startswith("("):
            raise FormulaError(f"{m.group()} at position {m.start()} is a column name in backticks; "
                               "it cannot be called")
    unquoted = _QUOTED.sub(lambda m: " " * len(m.group()), text)      # positions kept
    for m in re.finditer(r"([A-Za-z.][A-Za-z0-9._]*)\s*\(", unquoted):
        if m.group(1) not in FUNCTIONS and m.group(1) not in SPECIAL:
            raise FormulaError(f"function {m.group(1)!r} at position {m.start()} is not allowed in a formula "
                               f"(allowed: {', '.join([*FUNCTIONS, *SPECIAL])})")
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise FormulaError(f"character {bad!r} at position {len(text) - len(text[pos:].lstrip())} is not "
                               "allowed in a formula (only column names, `quoted column names`, numbers, "
                               "+ - * / ^ : | || ~ ( ) , "
                               "and the functions " + ", ".join([*FUNCTIONS, *SPECIAL]) + ")")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text))

    def take(self, value=None):
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise FormulaError(f"expected {value!r} at position {tok[2]} of the formula, found "
                               f"{tok[1] or 'the end'!r}")
        self.i += 1
        return tok

    def expr(self, min_prec: int = 0) -> Node:
        left = self.atom()
        while True:
            kind, op, _ = self.peek()
            if kind != "op" or op not in _BINARY or _BINARY[op] < min_prec:
                return left
            self.take()
            prec = _BINARY[op]
            right = self.expr(prec if op == "^" else prec + 1)
            left = Node(op, (left, right))

    def atom(self) -> Node:
        kind, value, pos = self.take()
        if kind == "num":
            return Node("num", value=float(value))
        if kind == "name":
            if self.peek()[1] == "(":
                if value not in FUNCTIONS and value not in SPECIAL:
                    raise FormulaError(f"function {value!r} at position {pos} is not allowed in a formula "
                                       f"(allowed: {', '.join([*FUNCTIONS, *SPECIAL])})")
                self.take("(")
                args = [self.expr()]
                while self.peek()[1] == ",":
                    self.take(",")
                    args.append(self.expr())
                self.take(")")
                return Node("call", (value, *args))
            return Node("name", value=value)
        if kind == "quoted":
            return Node("name", value=value)
        if value == "(":
            inner = self.expr()
            self.take(")")
            return Node("paren", (inner,))
        if value == "-":
            return Node("neg", (self.expr(_UNARY_MINUS),))
        raise FormulaError(f"unexpected {value or 'end of formula'!r} at position {pos}")


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """A fixed-effects term: an interaction of variables (each a Node); () is the intercept."""

    variables: tuple[Node, ...]

    @property
    def label(self) -> str:
        return ":".join(v.deparse() for v in self.variables)


@dataclass(frozen=True)
class RandomTerm:
    """`(lhs | group)`: lhs terms with an intercept flag, group = variables of the grouping factor."""

    intercept: bool
    terms: tuple[Term, ...]
    group: tuple[str, ...]

    @property
    def group_name(self) -> str:
        return ":".join(self.group)

    def to_r(self) -> str:
        lhs = " + ".join(["1" if self.intercept else "0"] + [t.label for t in self.terms])
        return f"({lhs} | {':'.join(Node('name', value=g).deparse() for g in self.group)})"


@dataclass(frozen=True)
class Formula:
    text: str
    response: Node
    intercept: bool
    terms: tuple[Term, ...]
    offsets: tuple[Node, ...]
    random: tuple[RandomTerm, ...]

    def to_r(self) -> str:
        parts = ["1" if self.intercept else "0"] + [t.label for t in self.terms]
        parts += [f"offset({o.deparse()})" for o in self.offsets] + [r.to_r() for r in self.random]
        return f"{self.response.deparse()} ~ " + " + ".join(parts)

    def columns(self) -> set[str]:
        names: set[str] = set()
        nodes = [self.response, *self.offsets, *(v for t in self.terms for v in t.variables)]
        nodes += [v for r in self.random for t in r.terms for v in t.variables]
        for n in nodes:
            names |= node_columns(n)
        return names | {g for r in self.random for g in r.group}

    def __str__(self) -> str:
        return self.to_r()


def node_columns(node: Node) -> set[str]:
    if node.op == "name":
        return {node.value}
    if node.op == "num":
        return set()
    args = node.args[1:] if node.op == "call" else node.args
    return set().union(*(node_columns(a) for a in args))


def parse_formula(text) -> Formula:
    """Parse an lme4 formula string; raises FormulaError for anything outside the grammar."""
    if isinstance(text, Formula):
        return text
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula must be a non-empty string like 'y ~ x + (1 | g)'")
    p = _Parser(text)
    tree = p.expr()
    if p.peek()[0] != "end":
        raise FormulaError(f"unexpected {p.peek()[1]!r} at position {p.peek()[2]} of the formula")
    if tree.op != "~":
        raise FormulaError("the formula needs a response: 'response ~ terms'")
    response, rhs = tree.args
    _check_response(response)
    intercept, terms, offsets, random = _rhs(rhs)
    return Formula(text, response, intercept, tuple(terms), tuple(offsets), tuple(random))


def _check_response(node: Node) -> None:
    if node.op == "name":
        return
    if node.op == "call" and node.args[0] == "cbind" and len(node.args) == 3:
        for side in node.args[1:]:
            _check_arithmetic(side)
        return
    raise FormulaError(f"the response must be a column or cbind(successes, failures), not {node.deparse()!r}")


def _check_arithmetic(node: Node) -> None:
    """Inside I(), offset(), cbind() and functions: numbers, columns, + - * / ^, log/exp/sqrt/abs."""
    if node.op in ("name", "num"):
        return
    if node.op == "call":
        if node.args[0] not in FUNCTIONS and node.args[0] != "I":
            raise FormulaError(f"function {node.args[0]!r} is not allowed inside an expression")
        if len(node.args) != 2:
            raise FormulaError(f"{node.args[0]}() takes one argument")
        return _check_arithmetic(node.args[1])
    if node.op in ("~", "|", "||", ":"):
        raise FormulaError(f"operator {node.op!r} is not allowed inside an expression ({node.deparse()})")
    for a in node.args:
        _check_arithmetic(a)


def _rhs(node: Node):
    """Formula algebra of the right-hand side → (intercept, terms, offsets, random terms)."""
    state = {"intercept": True, "terms": [], "offsets": [], "random": []}

    def add(node: Node, sign: int = 1):
        if node.op == "+":
            add(node.args[0], sign)
            add(node.args[1], sign)
        elif node.op == "-":
            add(node.args[0], sign)
            add(node.args[1], -sign)
        elif node.op == "neg":                  # `y ~ -1 + (1 | g)`
            add(node.args[0], -sign)
        elif node.op == "num" and node.value in (0.0, 1.0):
            state["intercept"] = (node.value == 1.0) == (sign > 0)
        elif node.op == "paren" and node.args[0].op in ("|", "||"):
            if sign < 0:
                raise FormulaError(f"cannot remove a random-effects term: {node.deparse()}")
            state["random"] += _random(node.args[0])
        elif node.op == "call" and node.args[0] == "offset":
            if len(node.args) != 2:
                raise FormulaError("offset() takes one argument")
            _check_arithmetic(node.args[1])
            state["offsets"].append(node.args[1])
        else:
            if sign < 0:
                raise FormulaError(f"removing the term {node.deparse()!r} is not supported (only '- 1' or '+ 0')")
            for t in _terms(node):
                if t not in state["terms"]:
                    state["terms"].append(t)

    add(node)
    return state["intercept"], state["terms"], state["offsets"], state["random"]


def _terms(node: Node) -> list[Term]:
    """Expand `a*b`, `a/b`, `a:b` and parentheses into terms (R's terms())."""
    if node.op == "paren":
        return _terms(node.args[0])
    if node.op == "+":
        out = _terms(node.args[0])
        return out + [t for t in _terms(node.args[1]) if t not in out]
    if node.op == ":":
        return [_interact(a, b) for a in _terms(node.args[0]) for b in _terms(node.args[1])]
    if node.op == "*":
        left, right = _terms(node.args[0]), _terms(node.args[1])
        inter = [_interact(a, b) for a in left for b in right]
        return list(dict.fromkeys(left + right + inter))
    if node.op == "/":
        left, right = _terms(node.args[0]), _terms(node.args[1])
        whole = Term(tuple(dict.fromkeys(v for t in left for v in t.variables)))
        return list(dict.fromkeys(left + [_interact(whole, b) for b in right]))
    if node.op == "name":
        return [Term((node,))]
    if node.op == "call" and (node.args[0] in FUNCTIONS or node.args[0] == "I"):
        _check_arithmetic(node)
        return [Term((node,))]
    if node.op == "call":
        raise FormulaError(f"{node.args[0]}() is not allowed on the right-hand side")
    if node.op == "num":
        raise FormulaError(f"a number ({node.deparse()}) is only allowed as 0 or 1 (the intercept)")
    raise FormulaError(f"{node.deparse()!r} is not a model term; wrap arithmetic in I(), e.g. I({node.deparse()})")


def _interact(a: Term, b: Term) -> Term:
    return Term(tuple(dict.fromkeys(a.variables + b.variables)))


def _random(bar: Node) -> list[RandomTerm]:
    """`(lhs | g)`, `(lhs || g)` (→ one uncorrelated term per column), `g = a/b` (→ b:a, a)."""
    lhs, grp = bar.args
    intercept, terms, offsets, random = _rhs(lhs)
    if offsets or random:
        raise FormulaError(f"offset() and nested bars are not allowed left of '|': {bar.deparse()}")
    groups = _groups(grp)
    if bar.op == "|":
        return [RandomTerm(intercept, tuple(terms), g) for g in groups]
    pieces = ([RandomTerm(True, (), None)] if intercept else []) + [RandomTerm(False, (t,), None) for t in terms]
    return [RandomTerm(p.intercept, p.terms, g) for g in groups for p in pieces]


def _groups(node: Node) -> list[tuple[str, ...]]:
    if node.op == "name":
        return [(node.value,)]
    if node.op == ":" and all(a.op == "name" for a in node.args):
        return [(node.args[0].value, node.args[1].value)]
    if node.op == "/" and all(a.op == "name" for a in node.args):
        a, b = node.args[0].value, node.args[1].value
        return [(b, a), (a,)]
    raise FormulaError(f"grouping factor must be a column, a:b or a/b, not {node.deparse()!r}")


# ---------------------------------------------------------------------------------------------
def evaluate(node: Node, data: pd.DataFrame) -> np.ndarray:
    """Numeric value of a whitelisted expression over the data frame's columns."""
    if node.op == "num":
        return np.full(len(data), node.value)
    if node.op == "name":
        col = data[node.value]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise ModelError(f"column {node.value!r} is not numeric but is used in arithmetic ({node.deparse()})")
        return col.to_numpy(dtype=float)
    if node.op == "paren":
        return evaluate(node.args[0], data)
    if node.op == "neg":
        return -evaluate(node.args[0], data)
    if node.op == "call":
        fname, arg = node.args
        value = evaluate(arg, data)
        if fname == "I":
            return value
        with np.errstate(all="ignore"):
            return FUNCTIONS[fname](value)
    a, b = evaluate(node.args[0], data), evaluate(node.args[1], data)
    with np.errstate(all="ignore"):
        return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}[node.op](a, b)
