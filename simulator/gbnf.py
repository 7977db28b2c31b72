"""GBNF grammars (llama.cpp's format, LM Studio's `structured: {type: "gbnf"}`).

`parse` reads the grammar language llama.cpp accepts: `name ::= ...` rules, string
literals, character classes (`[a-z]`, `[^"\\\\]`), `.`, grouping, alternatives and the
repetitions `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`, with `#` comments. `Generator` then
walks from `root` and produces one string the grammar accepts: alternatives and repeat
counts come from a seeded PRNG, characters from classes follow a stream of vocabulary
words where the class allows them, and past a depth budget every choice takes its
shortest expansion, so generation always ends. A grammar llama.cpp would reject raises
GrammarError (the prediction fails, as LM Studio's does).
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass

from simulator.errors import SimError

_NAME_CHARS = set(string.ascii_letters + string.digits + "-_")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]",
            "-": "-", "^": "^", "/": "/", "b": "\b", "f": "\f"}
_MAX_DEPTH = 12
_FALLBACK = string.ascii_lowercase + string.digits + " .,"


class GrammarError(ValueError):
    """The grammar does not parse (or has no root rule)."""


@dataclass
class Lit:
    text: str


@dataclass
class CharSet:
    ranges: list[tuple[str, str]]
    negated: bool

    def allows(self, ch: str) -> bool:
        inside = any(lo <= ch <= hi for lo, hi in self.ranges)
        return inside != self.negated


@dataclass
class Ref:
    name: str


@dataclass
class Seq:
    items: list[Node]


@dataclass
class Alt:
    options: list[Node]


@dataclass
class Repeat:
    item: Node
    low: int
    high: int | None


Node = Lit | CharSet | Ref | Seq | Alt | Repeat


class _Parser:
    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def error(self, why: str) -> GrammarError:
        line = self.s.count("\n", 0, self.i) + 1
        return GrammarError(f"{why} at line {line}")

    def skip(self, newlines: bool) -> None:
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            elif ch in " \t\r" or (newlines and ch == "\n"):
                self.i += 1
            else:
                return

    def name(self) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] in _NAME_CHARS:
            self.i += 1
        if start == self.i:
            raise self.error("expecting name")
        return self.s[start:self.i]

    def rules(self) -> dict[str, Node]:
        rules: dict[str, Node] = {}
        self.skip(True)
        while self.i < len(self.s):
            name = self.name()
            self.skip(False)
            if not self.s.startswith("::=", self.i):
                raise self.error("expecting ::=")
            self.i += 3
            rules[name] = self.alternatives(depth=0)
            self.skip(True)
        return rules

    def alternatives(self, depth: int) -> Node:
        options = [self.sequence(depth)]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            options.append(self.sequence(depth))
        return options[0] if len(options) == 1 else Alt(options)

    def sequence(self, depth: int) -> Node:
        items: list[Node] = []
        while True:
            self.skip(newlines=depth > 0)
            if self._continues_on_next_line(depth):
                self.skip(True)
            if self.i >= len(self.s) or self.s[self.i] in "|)\n":
                return items[0] if len(items) == 1 else Seq(items)
            items.append(self.postfix(self.atom(depth)))

    def _continues_on_next_line(self, depth: int) -> bool:
        """A rule goes on past a newline when the next line is indented (llama.cpp)."""
        if depth > 0 or self.i >= len(self.s) or self.s[self.i] != "\n":
            return False
        j = self.i + 1
        return j < len(self.s) and self.s[j] in " \t"

    def atom(self, depth: int) -> Node:
        ch = self.s[self.i]
        if ch == '"':
            return Lit(self.quoted('"'))
        if ch == "[":
            return self.charset()
        if ch == ".":
            self.i += 1
            return CharSet([], negated=True)
        if ch == "(":
            self.i += 1
            node = self.alternatives(depth + 1)
            self.skip(True)
            if self.i >= len(self.s) or self.s[self.i] != ")":
                raise self.error("expecting )")
            self.i += 1
            return node
        if ch in _NAME_CHARS:
            return Ref(self.name())
        raise self.error(f"unexpected {ch!r}")

    def char(self) -> str:
        if self.i >= len(self.s):
            raise self.error("unexpected end of input")
        ch = self.s[self.i]
        self.i += 1
        if ch != "\\":
            return ch
        esc = self.s[self.i:self.i + 1]
        self.i += 1
        width = {"x": 2, "u": 4, "U": 8}.get(esc)
        if width:
            digits = self.s[self.i:self.i + width]
            self.i += width
            try:
                return chr(int(digits, 16))
            except ValueError:
                raise self.error(f"bad escape \\{esc}{digits}") from None
        if esc not in _ESCAPES:
            raise self.error(f"unknown escape \\{esc}")
        return _ESCAPES[esc]

    def quoted(self, end: str) -> str:
        self.i += 1
        out = []
        while self.i < len(self.s) and self.s[self.i] != end:
            out.append(self.char())
        if self.i >= len(self.s):
            raise self.error("unterminated string")
        self.i += 1
        return "".join(out)

    def charset(self) -> CharSet:
        self.i += 1
        negated = self.s.startswith("^", self.i)
        self.i += negated
        ranges: list[tuple[str, str]] = []
        while self.i < len(self.s) and self.s[self.i] != "]":
            lo = self.char()
            hi = lo
            if self.s.startswith("-", self.i) and self.s[self.i + 1:self.i + 2] != "]":
                self.i += 1
                hi = self.char()
            ranges.append((lo, hi))
        if self.i >= len(self.s):
            raise self.error("unterminated character class")
        self.i += 1
        return CharSet(ranges, negated)

    def postfix(self, node: Node) -> Node:
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in "*+?":
                self.i += 1
                node = Repeat(node, 1 if ch == "+" else 0, 1 if ch == "?" else None)
            elif ch == "{":
                node = self.braces(node)
            else:
                return node
        return node

    def braces(self, node: Node) -> Node:
        end = self.s.find("}", self.i)
        if end < 0:
            raise self.error("unterminated {")
        body, self.i = self.s[self.i + 1:end], end + 1
        low, _, high = body.partition(",")
        try:
            lo = int(low)
            hi = lo if "," not in body else (int(high) if high.strip() else None)
        except ValueError:
            raise self.error(f"bad repetition {{{body}}}") from None
        return Repeat(node, lo, hi)


def parse(text: str) -> dict[str, Node]:
    rules = _Parser(text).rules()
    if "root" not in rules:
        raise GrammarError("grammar does not contain a root symbol")
    for ref in _refs(rules):
        if ref not in rules:
            raise GrammarError(f"undefined rule identifier '{ref}'")
    return rules


def _refs(rules: dict[str, Node]) -> Iterator[str]:
    stack = list(rules.values())
    while stack:
        node = stack.pop()
        if isinstance(node, Ref):
            yield node.name
        elif isinstance(node, (Seq, Alt)):
            stack.extend(node.items if isinstance(node, Seq) else node.options)
        elif isinstance(node, Repeat):
            stack.append(node.item)


class Generator:
    """One string of the grammar, from `root`; `words` feeds characters to classes."""

    def __init__(self, rules: dict[str, Node], rng: random.Random, words: Iterator[str]):
        self.rules, self.rng, self.words = rules, rng, words
        self.buffer = ""
        self.cost = self._costs()

    def text(self) -> str:
        return "".join(self._gen(self.rules["root"], 0))

    def _costs(self) -> dict[str, float]:
        """Shortest expansion length per rule (fixed point), to end deep recursion."""
        cost = {name: float("inf") for name in self.rules}
        for _ in range(len(self.rules) + 1):
            for name, node in self.rules.items():
                cost[name] = min(cost[name], self._node_cost(node, cost))
        return cost

    def _node_cost(self, node: Node, cost: dict[str, float]) -> float:
        if isinstance(node, Lit):
            return len(node.text)
        if isinstance(node, CharSet):
            return 1
        if isinstance(node, Ref):
            return cost.get(node.name, float("inf"))
        if isinstance(node, Seq):
            return sum(self._node_cost(n, cost) for n in node.items)
        if isinstance(node, Alt):
            return min(self._node_cost(n, cost) for n in node.options)
        return node.low * self._node_cost(node.item, cost)

    def _gen(self, node: Node, depth: int) -> Iterator[str]:
        if isinstance(node, Lit):
            yield node.text
        elif isinstance(node, CharSet):
            yield self._char(node)
        elif isinstance(node, Ref):
            yield from self._gen(self.rules[node.name], depth + 1)
        elif isinstance(node, Seq):
            for item in node.items:
                yield from self._gen(item, depth)
        elif isinstance(node, Alt):
            yield from self._gen(self._choose(node.options, depth), depth + 1)
        else:
            yield from self._repeat(node, depth)

    def _choose(self, options: list[Node], depth: int) -> Node:
        finite = [o for o in options if self._node_cost(o, self.cost) < float("inf")]
        if depth >= _MAX_DEPTH or not finite:
            return min(options, key=lambda o: self._node_cost(o, self.cost))
        return finite[0] if self.rng.random() < 0.9 else self.rng.choice(finite)

    def _repeat(self, node: Repeat, depth: int) -> Iterator[str]:
        high = node.high if node.high is not None else node.low + (12 if depth < 6 else 2)
        count = node.low if depth >= _MAX_DEPTH else self.rng.randint(node.low, high)
        for _ in range(count):
            yield from self._gen(node.item, depth + 1)

    def _char(self, charset: CharSet) -> str:
        for _ in range(64):
            if not self.buffer:
                self.buffer = next(self.words)
            ch, self.buffer = self.buffer[0], self.buffer[1:]
            if charset.allows(ch):
                return ch
        allowed = [ch for ch in _FALLBACK if charset.allows(ch)]
        if allowed:
            return self.rng.choice(allowed)
        if charset.negated or not charset.ranges:
            return next(chr(c) for c in range(32, 0x3000) if charset.allows(chr(c)))
        return charset.ranges[0][0]


def generate(grammar: str, rng: random.Random, words: Iterator[str]) -> str:
    return Generator(parse(grammar), rng, words).text()


def check_grammar(grammar: object) -> None:
    """SimError when llama.cpp would refuse the grammar (the prediction does not start)."""
    if not isinstance(grammar, str):
        raise SimError({"title": "Failed to parse grammar: gbnfGrammar is not a string"})
    try:
        parse(grammar)
    except GrammarError as exc:
        raise SimError({"title": f"Failed to parse grammar: {exc}"}) from None
