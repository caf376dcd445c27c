"""Deciding whether a model's final answer equals the gold answer.

Three kinds of answers are compared:

* **numbers** (GSM8K): ``1,000``, ``$1,000.00``, ``50%``, ``-3``, ``3/4``, ``1 1/2``, ``18 dollars``
  are read into exact :class:`fractions.Fraction` values, so ``10`` == ``10.00`` and
  ``0.75`` == ``3/4`` without any floating-point tolerance;
* **LaTeX** (MATH): ``\\frac{1}{2}``, ``\\sqrt{2}``, ``2\\pi``, ``x^2+1`` are translated by a small
  recursive-descent reader into a Python expression made only of whitelisted tokens, parsed with
  :func:`sympy.parsing.sympy_parser.parse_expr` and compared symbolically;
* **multiple-choice letters**: ``(B)``, ``B)``, ``B.``, ``Answer: b``.

``answers_match(predicted, gold)`` picks the kind from the gold answer (``kind="auto"``).
Anything that cannot be read is simply *not equal*: verification never raises on model output.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

AnswerKind = Literal["auto", "number", "latex", "choice"]
CHOICE_LETTERS = "ABCDEFGHIJ"

MAX_LATEX_CHARS = 200
MAX_NESTING = 20
MAX_EXPONENT = 1000

# ---------------------------------------------------------------------------------------- numbers

_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−–])?\s*\\?\$?\s*"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s*/\s*(?P<den>\d+)(?![\d.]))?"
)
_MIXED = re.compile(r"(?<![\w.])(?P<sign>[-−–])?\s*(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)(?![\d.])")
_MARKDOWN = re.compile(r"[*_`]+")


def parse_number(text: str) -> Fraction | None:
    """The first number in ``text`` as an exact fraction, or ``None``.

    Thousands separators, currency signs, ``%``, trailing zeros, fractions ``a/b``, mixed
    numbers ``1 1/2``, a leading minus sign and unit words after the number are all accepted.

    >>> parse_number("$1,250.50 dollars")
    Fraction(2501, 2)
    >>> parse_number("-3/4") == Fraction(-3, 4)
    True
    """
    cleaned = _MARKDOWN.sub("", text).replace("\\!", "").replace("{,}", ",")
    mixed = _MIXED.match(cleaned.strip())
    if mixed:
        value = int(mixed["whole"]) + Fraction(int(mixed["num"]), int(mixed["den"]) or 1)
        return -value if mixed["sign"] else value
    for match in _NUMBER.finditer(cleaned):
        if not (match["int"] or match["frac"]):
            continue
        value = Fraction((match["int"] or "0").replace(",", "") + (match["frac"] or ""))
        if match["den"] is not None:
            if int(match["den"]) == 0:
                return None
            value /= int(match["den"])
        return -value if match["sign"] else value
    return None


_PLAIN_NUMBER = re.compile(
    r"[-−–]?\s*\\?\$?\s*(?:\d+\s+\d+\s*/\s*\d+|(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:\s*/\s*\d+)?)"
    r"\s*(?P<unit>\\?%|\s[A-Za-z][A-Za-z .']*)?"
)
_MATH_WORDS = {"pi", "sqrt", "i", "e", "inf", "infinity", "x", "y", "n"}


def is_plain_number(text: str) -> bool:
    """Whether ``text`` is one number with optional sign, currency, ``%`` and unit words (``18 dollars``)."""
    cleaned = _MARKDOWN.sub("", text).strip().rstrip(".")
    match = _PLAIN_NUMBER.fullmatch(cleaned)
    if not match or not re.search(r"\d", cleaned):
        return False
    unit = (match["unit"] or "").strip().lower().lstrip("\\")
    if unit in ("", "%"):
        return True
    # "2 pi" or "3 x" is math, not a number followed by a unit.
    return len(unit) > 1 and unit.split(" ")[0] not in _MATH_WORDS


# ---------------------------------------------------------------------------------------- choices

_CHOICE_PATTERNS = [
    # "(B)", "B)", "B.", "B:", "B" alone, "b" -- at the start, after an optional "Answer:" prefix.
    re.compile(r"^\(?\s*([A-Ja-j])\s*(?:\)|\.|:|$|\s)"),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"\b(?:option|choice|answer is)\s*\(?([A-J])\b", re.IGNORECASE),
]
_ANSWER_PREFIX = re.compile(r"^\s*(?:final\s+)?answer\s*(?:is)?\s*[:=]?\s*", re.IGNORECASE)


def parse_choice(text: str) -> str | None:
    """The multiple-choice letter in ``text`` (upper case), or ``None``.

    >>> parse_choice("Answer: (c) 42")
    'C'
    """
    cleaned = _ANSWER_PREFIX.sub("", _MARKDOWN.sub("", text).replace("$", "")).strip()
    cleaned = re.sub(r"^\\(?:text|textbf|mathrm)\{(.*)\}$", r"\1", cleaned).strip()
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(cleaned)
        if match:
            return match.group(1).upper()
    return None


# ---------------------------------------------------------------------------------------- LaTeX

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d+(?:\.\d+)?|\.\d+)"
    r"|(?P<cmd>\\[A-Za-z]+)|(?P<letter>[A-Za-z])|(?P<op>[-+*/^(){}\[\]]))"
)
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\\displaystyle|\\limits|~")
_UNIT_TEXT = re.compile(r"\\(?:text|mbox|mathrm|textbf|textnormal)\s*\{\s*([A-Za-z][A-Za-z .]*)\}(?:\^\{?\d\}?)?")
_TEXT = re.compile(r"\\(?:text|mbox|mathrm|textbf|textnormal)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|\\circ|°")
# Commands that become a Python name (all bound in _LOCALS) or an operator.
_COMMAND_TOKENS = {r"\pi": "pi", r"\infty": "oo", r"\cdot": "*", r"\times": "*", r"\div": "/"}


class _LatexReader:
    """Recursive-descent translation of a LaTeX math string into a whitelisted Python expression.

    The output contains only: integer literals, ``+ - * / ** ( ) ,``, single ASCII letters and the
    names ``sqrt``, ``root``, ``pi`` and ``oo``. Anything else makes the reader give up.
    """

    def __init__(self, text: str) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise ValueError(f"unexpected character {text[pos]!r}")
            kind = match.lastgroup
            tokens.append((kind, match.group(kind)))
            pos = match.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        return tokens

    def translate(self) -> str:
        out = self._sequence(closers=(), depth=0)
        if self.pos != len(self.tokens):
            raise ValueError("unbalanced brackets")
        return out

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise ValueError("unexpected end of expression")
        self.pos += 1
        return token

    def _sequence(self, closers: tuple[str, ...], depth: int) -> str:
        if depth > MAX_NESTING:
            raise ValueError("expression nested too deeply")
        parts: list[str] = []
        previous_is_operand = False
        while (token := self._peek()) is not None and not (token[0] == "op" and token[1] in closers):
            if token[0] == "op" and token[1] in "+-*/":
                self.pos += 1
                parts.append(token[1])
                previous_is_operand = False
                continue
            if token[0] == "op" and token[1] == "^":
                if not previous_is_operand:
                    raise ValueError("exponent without base")
                self.pos += 1
                parts.append("**(" + self._argument(depth) + ")")
                continue
            if token[0] == "cmd" and _COMMAND_TOKENS.get(token[1]) in ("*", "/"):
                self.pos += 1
                parts.append(_COMMAND_TOKENS[token[1]])
                previous_is_operand = False
                continue
            if previous_is_operand and token[0] == "num" and self.tokens[self.pos - 1][0] == "num":
                raise ValueError("two numbers side by side")  # "1 1/2" is ambiguous in LaTeX
            if token[0] == "letter" and self._letter_run() >= 3:
                raise ValueError("a word, not math")  # "eval", "none": words are not products of symbols
            operand = self._operand(depth)
            # Juxtaposition is multiplication in LaTeX: 2\pi, 3\sqrt{2}, 2x.
            parts.append(("*" if previous_is_operand else "") + operand)
            previous_is_operand = True
        return "".join(parts)

    def _letter_run(self) -> int:
        run = 0
        while self.pos + run < len(self.tokens) and self.tokens[self.pos + run][0] == "letter":
            run += 1
        return run

    def _operand(self, depth: int) -> str:
        kind, value = self._next()
        if kind == "num":
            return _decimal_as_fraction(value.replace(",", ""))
        if kind == "letter":
            return value
        if kind == "op" and value in "({[":
            closer = {"(": ")", "{": "}", "[": "]"}[value]
            inner = self._sequence(closers=(closer,), depth=depth + 1)
            self._expect(closer)
            return "(" + inner + ")"
        if kind == "cmd":
            return self._command(value, depth)
        raise ValueError(f"unexpected {value!r}")

    def _command(self, name: str, depth: int) -> str:
        if name in (r"\frac", r"\dfrac", r"\tfrac"):
            numerator = self._argument(depth)
            denominator = self._argument(depth)
            return f"(({numerator})/({denominator}))"
        if name == r"\sqrt":
            token = self._peek()
            if token == ("op", "["):
                self.pos += 1
                index = self._sequence(closers=("]",), depth=depth + 1)
                self._expect("]")
                return f"root({self._argument(depth)},{index})"
            return f"sqrt({self._argument(depth)})"
        if name in _COMMAND_TOKENS and _COMMAND_TOKENS[name] not in ("*", "/"):
            return _COMMAND_TOKENS[name]
        raise ValueError(f"unsupported command {name}")

    def _argument(self, depth: int) -> str:
        """A braced group, or a single token (``\\frac12``, ``x^2``, ``\\sqrt2``)."""
        token = self._peek()
        if token == ("op", "{"):
            self.pos += 1
            inner = self._sequence(closers=("}",), depth=depth + 1)
            self._expect("}")
            return inner
        kind, value = self._next()
        if kind == "num":
            # \frac12 means \frac{1}{2}: a bare digit argument is one digit only.
            if len(value) > 1 and value.isdigit():
                self.tokens.insert(self.pos, ("num", value[1:]))
                value = value[0]
            return _decimal_as_fraction(value)
        if kind == "letter":
            return value
        if kind == "cmd":
            return self._command(value, depth)
        raise ValueError(f"unexpected {value!r}")

    def _expect(self, closer: str) -> None:
        if self._next() != ("op", closer):
            raise ValueError(f"expected {closer!r}")


def _decimal_as_fraction(literal: str) -> str:
    # "0.25" -> "(25/100)": integer literals keep the comparison exact (no Float round-off).
    if "." not in literal:
        return literal
    whole, _, decimals = literal.partition(".")
    return f"({(whole or '0') + decimals}/1{'0' * len(decimals)})"


def clean_latex(text: str) -> str:
    """Strip what does not change a LaTeX answer's value: ``$``, spacing, units, degrees, ``%``."""
    text = text.strip().strip("$").strip()
    text = _SPACING.sub(" ", text)
    text = _UNIT_TEXT.sub("", text)
    text = _TEXT.sub(r"\1", text)
    text = _DEGREES.sub("", text)
    text = text.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    text = text.replace("{,}", ",").replace("−", "-")
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = text.rstrip(" .")
    # "x = 5" -> "5": the value is what is compared.
    if text.count("=") == 1:
        text = text.split("=")[1]
    return text.strip()


def parse_math(text: str):
    """A sympy expression for a LaTeX or plain math answer, or ``None`` when it cannot be read safely.

    Safety: the model's text never reaches ``eval``. :class:`_LatexReader` tokenizes it with a
    closed grammar and *re-emits* an expression from scratch, containing only integer literals,
    arithmetic operators, parentheses, single-letter symbol names and the four names bound in
    ``_LOCALS``. ``parse_expr`` (which does call ``eval``) then runs with empty builtins and a
    global namespace holding only sympy constructors, so no attribute access, call of an arbitrary
    function, string literal or import can be expressed. Powers are checked before evaluation to
    keep ``9^{9^{9}}``-style inputs from exhausting memory.
    """
    cleaned = clean_latex(text)
    if not cleaned or len(cleaned) > MAX_LATEX_CHARS:
        return None
    try:
        expression = _LatexReader(cleaned).translate()
    except (ValueError, IndexError, RecursionError):
        return None
    return _sympify_whitelisted(expression)


def _sympify_whitelisted(expression: str):
    import sympy
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    globals_ = {name: getattr(sympy, name) for name in ("Integer", "Float", "Rational", "Symbol", "Add", "Mul", "Pow")}
    globals_["__builtins__"] = {}
    locals_ = {"sqrt": sympy.sqrt, "root": sympy.root, "pi": sympy.pi, "oo": sympy.oo}
    try:
        tree = parse_expr(expression, local_dict=locals_, global_dict=globals_,
                          transformations=standard_transformations, evaluate=False)
        if not _powers_are_small(tree, 1.0):
            return None
        return sympy.sympify(tree.doit())
    except (SyntaxError, TypeError, ValueError, ZeroDivisionError, AttributeError, RecursionError, OverflowError):
        return None


def _powers_are_small(node, scale: float) -> bool:
    """Every numeric exponent (times the exponents it sits under) stays below MAX_EXPONENT."""
    import sympy

    if isinstance(node, sympy.Pow):
        base, exponent = node.args
        if not _powers_are_small(exponent, 1.0):
            return False
        if exponent.is_number:
            magnitude = abs(complex(sympy.N(exponent, 15)))
            scale *= max(1.0, magnitude)
            if scale > MAX_EXPONENT:
                return False
        return _powers_are_small(base, scale)
    return all(_powers_are_small(arg, scale) for arg in node.args)


def math_equal(a, b) -> bool:
    """Symbolic equality of two sympy expressions (exact; ``0.333`` is not ``1/3``)."""
    import sympy

    if a is None or b is None:
        return False
    try:
        if a == b:
            return True
        difference = sympy.simplify(a - b)
        if difference == 0:
            return True
        if difference.is_number and not difference.free_symbols:
            # simplify can miss nested radicals; 40 digits separate any exact values we read.
            return abs(complex(sympy.N(difference, 40))) < 1e-30
    except (TypeError, ValueError, AttributeError, RecursionError, OverflowError):
        return False
    return False


# ---------------------------------------------------------------------------------------- dispatch

def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, keeping thousands separators (``1,000``) intact."""
    parts, depth, current = [], 0, ""
    for index, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        thousands = re.match(r"\d{3}(?!\d)", text[index + 1:]) and index > 0 and text[index - 1].isdigit()
        if char == "," and depth == 0 and not thousands:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts]


def _guess_kind(gold: str) -> AnswerKind:
    stripped = _MARKDOWN.sub("", gold).strip()
    if re.fullmatch(r"\(?[A-J]\)?\.?", stripped):
        return "choice"
    if is_plain_number(stripped):
        return "number"
    return "latex"


def _normalized_text(text: str) -> str:
    return re.sub(r"\s+", "", clean_latex(text)).lower()


def answers_match(predicted: str | None, gold: str, kind: AnswerKind = "auto") -> bool:
    """Whether the predicted final answer equals the gold one.

    Parameters
    ----------
    predicted : str or None
        The answer text the model gave (``None`` when it gave none).
    gold : str
        The reference answer (a number, a LaTeX expression or a choice letter).
    kind : {"auto", "number", "latex", "choice"}
        How to compare; ``"auto"`` guesses from ``gold``.

    Returns
    -------
    bool

    Examples
    --------
    >>> answers_match("$1,000.00", "1000")
    True
    >>> answers_match("\\\\frac{1}{2}", "0.5")
    True
    >>> answers_match("(B)", "B")
    True
    """
    if predicted is None or not predicted.strip():
        return False
    kind = _guess_kind(gold) if kind == "auto" else kind
    if kind == "choice":
        letter = parse_choice(gold)
        return letter is not None and parse_choice(predicted) == letter
    if kind == "number" and is_plain_number(predicted):
        gold_value = parse_number(gold)
        return gold_value is not None and parse_number(predicted) == gold_value
    return _math_answers_match(predicted, gold)


def _math_answers_match(predicted: str, gold: str) -> bool:
    if _normalized_text(predicted) == _normalized_text(gold):
        return True
    gold_text, predicted_text = clean_latex(gold), clean_latex(predicted)
    gold_tuple, predicted_tuple = _tuple_items(gold_text), _tuple_items(predicted_text)
    if gold_tuple is not None or predicted_tuple is not None:
        # "(1, 2)" is a point: same items in the same order.
        return (gold_tuple is not None and predicted_tuple is not None and len(gold_tuple) == len(predicted_tuple)
                and all(math_equal(_value_of(p), _value_of(g)) for p, g in zip(predicted_tuple, gold_tuple)))
    gold_parts, predicted_parts = _split_top_level(gold_text), _split_top_level(predicted_text)
    if len(gold_parts) != len(predicted_parts):
        return False
    if len(gold_parts) > 1:
        return _lists_match(predicted_parts, gold_parts)
    return math_equal(_value_of(predicted_text), _value_of(gold_text))


def _tuple_items(text: str) -> list[str] | None:
    """Items of a parenthesised tuple ``(a, b)``, or ``None`` when ``text`` is not one."""
    if not (text.startswith("(") and text.endswith(")")):
        return None
    items = _split_top_level(text[1:-1])
    inner_depth_ok = all(item.count("(") == item.count(")") for item in items)
    return items if len(items) > 1 and inner_depth_ok else None


def _value_of(text: str):
    if is_plain_number(text):
        import sympy

        value = parse_number(text)
        return None if value is None else sympy.Rational(value.numerator, value.denominator)
    return parse_math(text)


def _lists_match(predicted: list[str], gold: list[str]) -> bool:
    """Unordered match of answer lists (``1, 2`` == ``2, 1``); each gold item used once."""
    remaining = [_value_of(item) for item in gold]
    for item in predicted:
        value = _value_of(item)
        for index, candidate in enumerate(remaining):
            if math_equal(value, candidate):
                del remaining[index]
                break
        else:
            return False
    return True


# ---------------------------------------------------------------------------------------- final answers
#: How :func:`final_answer` found a value, in the order the rule tries them.
FINAL_ANSWER_RULES = ("marker", "boxed", "bare", "last_number")
NO_FINAL_ANSWER = "no final answer: no #### marker, no \\boxed{}, not a bare value"


def final_answer(text: str | None, gold: str | None = None) -> tuple[str | None, str]:
    """The final answer in ``text`` and the rule that found it (docs/statistics.md, "Final answers").

    The rule, tried in order:

    1. ``marker``: the text after the last ``####`` (GSM8K);
    2. ``boxed``: the content of the last ``\\boxed{}`` (MATH);
    3. ``bare``: the whole text when it is one bare value: a number (``6``, ``$1,000``, ``18
       dollars``), a choice letter (``(B)``), or a short expression with no words (``\\frac{1}{2}``);
    4. ``last_number``: only when ``gold`` is a number: the last number in the text, so free prose
       such as ``The answer is 6.`` is read as ``6``.

    Otherwise ``(None, NO_FINAL_ANSWER)``: the caller flags the text and excludes it, with that reason.

    >>> final_answer("She has 8.\\n#### 8")
    ('8', 'marker')
    >>> final_answer("6")
    ('6', 'bare')
    >>> final_answer("So the answer is 6.", gold="6")
    ('6', 'last_number')
    >>> final_answer("six apples")
    (None, 'no final answer: no #### marker, no \\\\boxed{}, not a bare value')
    """
    if text is None:
        return None, NO_FINAL_ANSWER
    stripped = str(text).strip()
    if "####" in stripped:
        value = stripped.rsplit("####", 1)[1].strip()
        return (value, "marker") if value else (None, NO_FINAL_ANSWER)
    from .prompting import last_boxed  # prompting builds on this module's parsers

    boxed = last_boxed(stripped)
    if boxed is not None:
        return boxed, "boxed"
    if stripped and _is_bare_value(stripped):
        return stripped, "bare"
    if gold is not None and _guess_kind(gold) == "number":
        numbers = [m.group(0).strip() for m in _NUMBER.finditer(stripped) if m["int"] or m["frac"]]
        if numbers:
            return numbers[-1], "last_number"
    return None, NO_FINAL_ANSWER


def _is_bare_value(text: str) -> bool:
    """One number, one choice letter, or a short expression without words (LaTeX commands aside)."""
    if is_plain_number(text) or re.fullmatch(r"\(?[A-J]\)?\.?", _MARKDOWN.sub("", text).strip()):
        return True
    words = re.sub(r"\\[A-Za-z]+", "", text)
    return len(text) <= 40 and "\n" not in text and not re.search(r"[A-Za-z]{2,}", words) and bool(re.search(r"\d", text))
