"""The feature query language of ``dsdi search``: which clips show what, scored from the fused class scores.

Grammar (keywords in any case; precedence NOT > AND > OR; two terms side by side mean AND)::

    query  := and ("OR" and)*
    and    := term (["AND"] term)*
    term   := [WEIGHT "*"] unary          WEIGHT: a positive number, e.g. 2*flooding_any, 0.5*(a OR b)
    unary  := "NOT" unary | feature | "(" query ")"
    feature:= a bare name (letters, digits, _ - / . : no spaces or brackets) | "a quoted name" | 'a quoted name'

A feature is one of the label set's features (the classes it ranks), matched exactly, else ignoring case. A clip's
value of a feature is its fused score in [0, 1]; the operators are fuzzy, on values x_i with weights w_i (1 unless
given):

- ``NOT x``  = 1 - x
- ``AND``    = the weighted geometric mean prod x_i ^ (w_i / sum w): 0 when any part is 0 (as min), but every part
  counts, and a weight makes its part count more;
- ``OR``     = 1 - prod (1 - x_i) ^ (w_i / sum w): its De Morgan dual, so NOT (a AND b) = NOT a OR NOT b.

So ``debris_any NOT water_any`` ranks clips with debris and without water first, and ``2*flooding_any AND roads_any``
prefers flooding over roads where they disagree.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

from dsdi.errors import InputError
from dsdi.labels.labelset import LabelSet

_TOKEN = re.compile(r"""\s*(?:(?P<open>\()|(?P<close>\))|(?P<times>\*)|"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'"""
                    r"""|(?P<number>\d+(?:\.\d*)?|\.\d+)(?=\s*\*)|(?P<word>[^\s()"'*]+))""")
_KEYWORDS = ("AND", "OR", "NOT")
_FLOOR = 1e-12  # values are clipped to [_FLOOR, 1 - _FLOOR] before logarithms


@dataclass(frozen=True)
class Feature:
    name: str  # as the label set spells it

    def value(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        return np.nan_to_num(scores[self.name].astype(np.float64), nan=0.0)


@dataclass(frozen=True)
class Not:
    part: Node

    def value(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        return 1.0 - self.part.value(scores)


@dataclass(frozen=True)
class Combined:
    """AND (``kind`` "and") or OR of weighted parts."""

    kind: str
    parts: tuple[tuple[float, Node], ...]

    def value(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        total = sum(weight for weight, _ in self.parts)
        log_sum = 0.0
        for weight, part in self.parts:
            x = np.clip(part.value(scores), _FLOOR, 1.0 - _FLOOR)
            log_sum = log_sum + (weight / total) * np.log(x if self.kind == "and" else 1.0 - x)
        return np.exp(log_sum) if self.kind == "and" else 1.0 - np.exp(log_sum)


Node = Feature | Not | Combined


@dataclass(frozen=True)
class Query:
    """A parsed query: ``text`` as given, ``root`` its expression tree."""

    text: str
    root: Node

    def features(self) -> list[str]:
        """The features the query names, in order of first use."""
        found: list[str] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Feature):
                found += [node.name] if node.name not in found else []
            elif isinstance(node, Not):
                stack.append(node.part)
            else:
                stack.extend(part for _, part in reversed(node.parts))
        return found

    def single_feature(self) -> str | None:
        """The feature of a query that is one feature alone (maybe weighted), else None."""
        return self.root.name if isinstance(self.root, Feature) else None

    def scores(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """float64 (N,) query values in [0, 1] of N clips from their fused scores (feature -> (N,); NaN as 0)."""
        return self.root.value(scores)


def parse_query(text: str, labelset: LabelSet) -> Query:
    """The query ``text`` over ``labelset``'s features; InputError (one line) naming the problem: a syntax error
    and where, or an unknown feature with the closest valid ones."""
    parser = _Parser(text, labelset)
    root = parser.query()
    if parser.position < len(parser.tokens):
        parser.fail(f"unexpected {parser.tokens[parser.position][1]!r}")
    return Query(text, root)


class _Parser:
    def __init__(self, text: str, labelset: LabelSet) -> None:
        self.text, self.labelset, self.position = text, labelset, 0
        self.tokens: list[tuple[str, str]] = []  # (kind, text): kind open, close, times, number, name, or a keyword
        end = 0
        for match in _TOKEN.finditer(text):
            if match.start() != end:
                break
            end = match.end()
            kind = match.lastgroup
            value = match.group(kind)
            if kind == "word" and value.upper() in _KEYWORDS:
                kind = value.upper()
            self.tokens.append(("name" if kind in ("dq", "sq", "word") else kind, value))
        if text[end:].strip():
            self.fail(f"cannot read {text[end:].strip()[:20]!r} (an unclosed quote?)")
        if not self.tokens:
            self.fail("empty query; name a feature, e.g. " + labelset.features[0])

    def fail(self, problem: str) -> None:
        raise InputError(f"--query {self.text!r}: {problem}; write e.g. 'a AND (b OR NOT c)', '2*a AND b', "
                         "quoting names with spaces")

    def peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def query(self) -> Node:
        parts = [self.conjunction()]
        while self.peek() == "OR":
            self.take()
            parts.append(self.conjunction())
        return parts[0][1] if len(parts) == 1 else Combined("or", tuple(parts))

    def conjunction(self) -> tuple[float, Node]:
        """One weighted term, or the AND of several (weight 1 in an OR)."""
        parts = [self.term()]
        while self.peek() in ("AND", "NOT", "name", "open", "number"):
            if self.peek() == "AND":
                self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (1.0, Combined("and", tuple(parts)))

    def term(self) -> tuple[float, Node]:
        weight = 1.0
        if self.peek() == "number":
            weight = float(self.take()[1])
            self.take()  # the "*" the number token is followed by
            if weight <= 0:
                self.fail(f"weight {weight:g}: weights must be above 0")
        return weight, self.unary()

    def unary(self) -> Node:
        kind = self.peek()
        if kind == "NOT":
            self.take()
            return Not(self.unary())
        if kind == "open":
            self.take()
            node = self.query()
            if self.peek() != "close":
                self.fail("a '(' is not closed")
            self.take()
            return node
        if kind == "name":
            return Feature(self.feature(self.take()[1]))
        self.fail("expected a feature name, '(' or NOT " + (f"before {self.take()[1]!r}" if kind else "at the end"))

    def feature(self, name: str) -> str:
        features = self.labelset.features
        if name in features:
            return name
        by_case = [feature for feature in features if feature.lower() == name.lower()]
        if by_case:
            return by_case[0]
        lowered = {feature.lower(): feature for feature in features}
        close = [lowered[f] for f in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
        close += [f for f in features if name.lower() in f.lower() and f not in close][: 3 - len(close)]
        hint = f"closest: {', '.join(repr(f) for f in close)}" if close else f"features: {', '.join(features)}"
        raise InputError(f"--query {self.text!r}: unknown feature {name!r} in label set {self.labelset.name}; {hint}")
