"""The math and markup lexer: character-level pre-labels before the linguistic rules run.

The lexer finds what spaCy cannot label well — numbers, operators, expressions, LaTeX, GSM8K
calculator annotations, markdown, list markers and code lines — and labels those characters
directly. Everything it leaves unlabelled is prose and is labelled word by word from spaCy's
analysis. It also returns a *masked* copy of the text (same length, so offsets are unchanged) in
which LaTeX and markup are replaced by neutral characters, so that spaCy tags the prose around
them as it would tag ordinary English.

Written by hand because no maintained library tokenizes mixed prose / LaTeX / arithmetic into
labelled units; the regular expressions are kept small and each pass is independent.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .spec import TaxonomySpec

SYMB, VERB_, ENT, COREF, META, CONTENT, FUNC = (
    "SYMBOLIC_MATH", "VERBAL_MATH", "ENTITY_NAME", "COREFERENCE", "META_DISCOURSE", "CONTENT", "FUNCTION")

_OPERATOR_CHARS = set("+=<>^√×÷·±≠≈∓≤≥∑∏∫∞π∝∠°′″⋅∗−")
_NOT_MATH_SM = set("|~¬→←↔⇒")  # Unicode 'Sm' symbols used as prose punctuation or arrows
_CURRENCY = "$€£¥₹"
_NUMBER = re.compile(
    r"(?<![\d.])(?<![A-Za-z][.,])"
    r"(?:\\?[$€£¥₹][ \t]?)?"
    r"[-−]?(?:\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[ \t]?\\?%|\$(?![ \t]?[\d.]))?"
    r"(?:(?:st|nd|rd|th|x|k|s)(?![A-Za-z]))?"
    r"(?![\d])"
)
_CALC = re.compile(r"<<[^<>\n]{0,200}>>")
_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*$", re.MULTILINE)
_CODE_LINE = re.compile(
    r"^[ \t]*(?:print\s*\(|(?:def|import|from|return|for|while|elif|else|if)\b[^\n]*:?\s*$|"
    r"[A-Za-z_][\w.\[\]]*\s*(?:[-+*/%]|//|\*\*)?=(?!=)\s*\S)", re.MULTILINE)
_OUTSIDE_CODE_LINE = re.compile(r"^[ \t]*(?:print\s*\(|[A-Za-z]\w*_\w*\s*(?:[-+*/]|//)?=(?!=)|(?:def|import)\s)",
                                re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:>[ \t]*)*([-*+•·‣◦])(?=[ \t])", re.MULTILINE)
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+•][ \t]+|#{1,6}[ \t]+)?(?:\*\*|__)?(\(?(?:\d{1,3}|[a-z])[.)])(?=[ \t*_]|$)", re.MULTILINE)
_STEP_MARKER = re.compile(r"\b(?:[Ss]tep|STEP)[ \t]+(\d{1,3}[a-z]?)([ \t]*[:.)-])?")
_HEADING = re.compile(r"^[ \t]*(#{1,6})(?=[ \t]|$|\d|\$)", re.MULTILINE)
_ANSWER_FRAME = re.compile(r"^[ \t]*####[ \t]*[$\\]*[-−]?[\d.,]+[ \t]*%?[ \t]*$", re.MULTILINE)
_BLOCKQUOTE = re.compile(r"^[ \t]*(>+)(?=[ \t])", re.MULTILINE)
_A_FRAME = re.compile(r"^[ \t]*(A)[ \t]*:", re.MULTILINE)
_RULE_LINE = re.compile(r"^[ \t]*([-*_=]{3,})[ \t]*$", re.MULTILINE)
_MARKDOWN = re.compile(r"\*\*+|__+|`+|~~")
_LATEX_CMD = re.compile(r"\\([A-Za-z]+)")
_SINGLE_LETTER = re.compile(r"(?<![\w'’\\.])([A-Za-z])(?![\w'’])(?!\.[A-Za-z])(?!-[A-Za-z])")
_TIMES = re.compile(r"(?<=[\d)%\]])([ \t]*)([x×X])(?=[ \t]*[\d($\\.])")
_COLON_RATIO = re.compile(r"(?<=\d):(?=\d)")
_UNIT_LETTERS = set("mgshlLkKcC")
_GLUED_PUNCT = re.compile(r"(?<=[A-Za-z])[:;,](?=[$\\]?\d)")


@dataclass
class LexResult:
    """Character-level output of the lexer.

    Attributes
    ----------
    labels : list of str or None
        Fine label per character (None: prose, labelled later by the word rules).
    units : list of int
        Unit id per character (-1 where unlabelled); characters of one unit form one span.
    masked : str
        Same length as the text; what spaCy analyses.
    next_unit : int
        First free unit id.
    """

    labels: list
    units: list
    masked: str
    next_unit: int


class _Lexer:
    def __init__(self, text: str, spec: TaxonomySpec) -> None:
        self.text = text
        self.n = len(text)
        self.spec = spec
        self.labels: list = [None] * self.n
        self.units = [-1] * self.n
        self.mask = list(text)
        self.region = [False] * self.n  # inside LaTeX/code/calculator regions (masked for spaCy)
        self.uid = 0

    # ------------------------------------------------------------------ helpers
    def mark(self, start: int, end: int, label: str, mask: str | None = None, unit: int | None = None) -> int:
        """Label the unlabelled non-space characters of text[start:end] as one unit."""
        if unit is None:
            unit = self.uid
            self.uid += 1
        for i in range(max(start, 0), min(end, self.n)):
            if self.labels[i] is None and not self.text[i].isspace():
                self.labels[i] = label
                self.units[i] = unit
                if mask is not None:
                    self.mask[i] = mask
        return unit

    def free(self, start: int, end: int) -> bool:
        return all(self.labels[i] is None for i in range(start, end))

    def line_bounds(self, i: int) -> tuple[int, int]:
        start = self.text.rfind("\n", 0, i) + 1
        end = self.text.find("\n", i)
        return start, (self.n if end < 0 else end)

    def neighbour(self, i: int, step: int) -> tuple[str, int]:
        """Nearest non-space character on the same line in direction ``step`` and the gap before it."""
        j, gap = i + step, 0
        while 0 <= j < self.n and self.text[j] in " \t":
            j += step
            gap += 1
        if 0 <= j < self.n and self.text[j] != "\n":
            return self.text[j], gap
        return "", gap

    # ------------------------------------------------------------------- passes
    def run(self) -> LexResult:
        self.code_fences()
        self.calculator()
        self.latex_regions()
        self.latex_commands()
        self.line_markup()
        self.code_lines_outside_fences()
        self.numbers()
        self.operators()
        self.single_letters()
        self.brackets()
        self.finish_mask()
        return LexResult(self.labels, self.units, "".join(self.mask), self.uid)

    def code_fences(self) -> None:
        fences = list(_FENCE.finditer(self.text))
        for k in range(0, len(fences), 2):
            opening = fences[k]
            closing = fences[k + 1] if k + 1 < len(fences) else None
            self.mark(opening.start(), opening.end(), FUNC, mask=" ")
            body_end = closing.start() if closing else self.n
            if closing:
                self.mark(closing.start(), closing.end(), FUNC, mask=" ")
            pos = opening.end() + 1
            while pos < body_end:
                end = self.text.find("\n", pos, body_end)
                end = body_end if end < 0 else end
                if _CODE_LINE.match(self.text, pos, end) or self.text[pos:end].lstrip(" \t").startswith("#"):
                    self.code_line(pos, end)
                pos = end + 1

    def code_lines_outside_fences(self) -> None:
        pos = 0
        while pos < self.n:
            end = self.text.find("\n", pos)
            end = self.n if end < 0 else end
            if self.labels[pos:end].count(None) == end - pos and _OUTSIDE_CODE_LINE.match(self.text, pos, end):
                self.code_line(pos, end)
            pos = end + 1

    _CODE_TOKEN = re.compile(
        r"(?P<comment>#.*)|(?P<string>[fFrRbB]?(?P<q>['\"])(?P<body>.*?)(?P=q))|(?P<word>[A-Za-z_]\w*)|"
        r"(?P<num>\d[\d_.]*(?:[eE][-+]?\d+)?)|(?P<other>\S)")

    def code_line(self, start: int, end: int) -> None:
        """Code: identifiers, numbers, operators SymbMath; keywords, '#', quotes FUNCTION; comments prose."""
        keywords = self.spec.lexicon("code_keywords")
        depth_stack: list[bool] = []
        previous_word = ""
        for m in self._CODE_TOKEN.finditer(self.text, start, end):
            if m.group("comment") is not None:
                self.mark(m.start(), m.start() + 1, FUNC, mask=" ")
                break  # the comment's words are prose
            if m.group("string") is not None:
                body_start, body_end = m.start("body"), m.end("body")
                self.mark(m.start(), body_start, FUNC, mask=" ")
                self.mark(body_end, m.end(), FUNC, mask=" ")
                self._fstring_fields(body_start, body_end)
                previous_word = ""
                continue
            token = m.group()
            self.region_range(m.start(), m.end())
            if m.group("word") is not None:
                self.mark(m.start(), m.end(), FUNC if token in keywords else SYMB, mask=" " if token in keywords else None)
                previous_word = token
                continue
            if token == "(":
                is_grammar = previous_word in keywords
                depth_stack.append(is_grammar)
                self.mark(m.start(), m.end(), FUNC if is_grammar else SYMB)
            elif token == ")":
                is_grammar = depth_stack.pop() if depth_stack else False
                self.mark(m.start(), m.end(), FUNC if is_grammar else SYMB)
            else:
                self.mark(m.start(), m.end(), SYMB)
            previous_word = ""

    def _fstring_fields(self, start: int, end: int) -> None:
        for m in re.finditer(r"\{[^{}]*\}", self.text[start:end]):
            self.mark(start + m.start(), start + m.end(), SYMB, mask=" ")

    def region_range(self, start: int, end: int) -> None:
        for i in range(start, end):
            self.region[i] = True

    def calculator(self) -> None:
        for m in _CALC.finditer(self.text):
            if self.free(m.start(), m.end()):
                self.mark(m.start(), m.end(), SYMB, mask=" ")

    # --------------------------------------------------------------------- LaTeX
    def latex_regions(self) -> None:
        text = self.text
        for pattern in (r"\\\[(.*?)\\\]", r"\\\((.*?)\\\)", r"\$\$(.*?)\$\$"):
            for m in re.finditer(pattern, text, flags=re.DOTALL):
                if self.free(m.start(), m.end()):
                    self.math_region(m.start(), m.end(), m.start(1), m.end(1))
        self.inline_dollars()

    def inline_dollars(self) -> None:
        text = self.text
        positions = [m.start() for m in re.finditer(r"(?<![\\$])\$(?!\$)", text)]
        k = 0
        while k + 1 < len(positions):
            a, b = positions[k], positions[k + 1]
            body = text[a + 1:b]
            if self.free(a, b + 1) and self._looks_like_inline_math(body, b):
                self.math_region(a, b + 1, a + 1, b)
                k += 2
            else:
                k += 1

    def _looks_like_inline_math(self, body: str, closing: int) -> bool:
        if not body or "\n" in body or body[0].isspace() or body[-1].isspace():
            return False
        if closing + 1 < self.n and self.text[closing + 1].isdigit():
            return False  # "$5+$10": two amounts of money, not a formula
        without_text = re.sub(r"\\[A-Za-z]+(\{[^{}]*\})?", " ", body)
        return re.search(r"[A-Za-z]{2,}", without_text) is None

    def math_region(self, start: int, end: int, body_start: int, body_end: int) -> None:
        """LaTeX math from start to end: all SymbMath except the words inside \\text{...}."""
        holes = self._text_holes(body_start, body_end)
        self.region_range(start, end)
        unit = self.uid
        self.uid += 1
        in_hole = [False] * (end - start)
        for a, b in holes:
            for i in range(a, b):
                in_hole[i - start] = True
        for i in range(start, end):
            if not in_hole[i - start]:
                self.mark(i, i + 1, SYMB, mask="0", unit=unit)

    def _text_holes(self, start: int, end: int) -> list[tuple[int, int]]:
        holes = []
        commands = self.spec.lexicon("latex_text_commands")
        for m in _LATEX_CMD.finditer(self.text, start, end):
            if m.group(1) in commands and m.end() < end and self.text[m.end()] == "{":
                close = _matching_brace(self.text, m.end(), end)
                if close is not None:
                    holes.append((m.end() + 1, close))
        return holes

    def latex_commands(self) -> None:
        text = self.text
        arg_commands = self.spec.lexicon("latex_arg_commands")
        text_commands = self.spec.lexicon("latex_text_commands")
        for m in _LATEX_CMD.finditer(text):
            if self.labels[m.start()] is not None:
                continue
            name = m.group(1)
            if name in arg_commands:
                end = m.end()
                for _ in range(2 if name in ("frac", "dfrac", "tfrac", "cfrac", "binom") else 1):
                    if end < self.n and text[end] == "[":
                        close = text.find("]", end)
                        end = close + 1 if close > 0 else end
                    if end < self.n and text[end] == "{":
                        close = _matching_brace(text, end, self.n)
                        if close is None:
                            break
                        end = close + 1
                self.math_region(m.start(), end, m.end(), end)
            elif name in text_commands and m.end() < self.n and text[m.end()] == "{":
                # Formatting outside math (\textbf{Answer}) frames prose like markdown does.
                close = _matching_brace(text, m.end(), self.n)
                self.mark(m.start(), m.end() + 1, FUNC, mask=" ")
                if close is not None:
                    self.mark(close, close + 1, FUNC, mask=" ")
            else:
                self.mark(m.start(), m.end(), SYMB, mask=" ")
        # Escapes; "\$40" and "30\%" are left to the number pass, which keeps them one unit.
        for m in re.finditer(r"\\[\[\]()]|\\\$(?![ \t]?[\d.])|(?<![\d \t])\\%|\\[{}]|\\\\", text):
            self.mark(m.start(), m.end(), SYMB, mask=" ")

    # ------------------------------------------------------------------- markup
    def line_markup(self) -> None:
        text = self.text
        for m in _RULE_LINE.finditer(text):
            self.mark(m.start(1), m.end(1), FUNC, mask=" ")
        for m in _HEADING.finditer(text):
            line_start, line_end = self.line_bounds(m.start(1))
            frame = m.group(1) == "####" and _ANSWER_FRAME.match(text, line_start, line_end)
            self.mark(m.start(1), m.end(1), META if frame else FUNC, mask=" ")
        for m in _STEP_MARKER.finditer(text):
            self.mark(m.start(), m.start() + 4, META)
            self.mark(m.start(1), m.end(1), META)
            if m.group(2):
                self.mark(m.start(2), m.end(2), META)
        for m in _LIST_MARKER.finditer(text):
            self.mark(m.start(1), m.end(1), META, mask=" ")
        for m in _BLOCKQUOTE.finditer(text):
            self.mark(m.start(1), m.end(1), FUNC, mask=" ")
        for m in _BULLET.finditer(text):
            self.mark(m.start(1), m.end(1), FUNC, mask=" ")
        for m in _A_FRAME.finditer(text):
            self.mark(m.start(1), m.end(1), META, mask=" ")
        for m in _MARKDOWN.finditer(text):
            token = m.group()
            left, right = self.neighbour(m.start(), -1)[0], self.neighbour(m.end() - 1, 1)[0]
            if token.startswith("**") and len(token) == 2 and left.isdigit() and right.isdigit():
                self.mark(m.start(), m.end(), SYMB)  # Python power, 2**3
            else:
                self.mark(m.start(), m.end(), FUNC, mask=" ")
        for i, ch in enumerate(text):
            if ch == "|" and self.labels[i] is None:
                self.mark(i, i + 1, FUNC, mask=" ")

    # ------------------------------------------------------------------ numbers
    def numbers(self) -> None:
        for m in _NUMBER.finditer(self.text):
            start, end = m.start(), m.end()
            token = m.group()
            if token[0] in "-−":
                start += 1  # the sign is an operator unit of its own (decided in operators())
            if self.free(start, end):
                self.mark(start, end, SYMB)
        for ch_index, ch in enumerate(self.text):
            if self.labels[ch_index] is None and not ch.isascii() and _is_numeric_char(ch):
                self.mark(ch_index, ch_index + 1, SYMB)
        for m in _TIMES.finditer(self.text):
            self.mark(m.start(2), m.end(2), SYMB, mask=" ")
        for m in _COLON_RATIO.finditer(self.text):
            self.mark(m.start(), m.end(), SYMB)
        for m in _GLUED_PUNCT.finditer(self.text):
            # "balls:16": spaCy would keep one token; a space in the mask splits it.
            self.mark(m.start(), m.end(), FUNC, mask=" ")

    # ---------------------------------------------------------------- operators
    def operators(self) -> None:
        text = self.text
        for i, ch in enumerate(text):
            if self.labels[i] is not None:
                continue
            if ch in _OPERATOR_CHARS or (unicodedata.category(ch) == "Sm" and ch not in _NOT_MATH_SM):
                self.mark(i, i + 1, SYMB, mask=self._mask_between_letters(i))
            elif ch == "%":
                self.mark(i, i + 1, SYMB)
            elif ch == "*":
                if self._star_is_operator(i):
                    self.mark(i, i + 1, SYMB, mask=self._mask_between_letters(i))
                else:
                    self.mark(i, i + 1, FUNC, mask=" ")
            elif ch == "/":
                if self._slash_is_operator(i):
                    self.mark(i, i + 1, SYMB, mask=self._mask_between_letters(i))
            elif ch in "-–":
                if self._dash_is_minus(i):
                    self.mark(i, i + 1, SYMB, mask=self._mask_between_letters(i))

    def _mask_between_letters(self, i: int) -> str | None:
        # "inches/remora": let spaCy see two words, not one.
        left = self.text[i - 1] if i > 0 else ""
        right = self.text[i + 1] if i + 1 < self.n else ""
        return " " if (left.isalpha() or right.isalpha()) else None

    def _star_is_operator(self, i: int) -> bool:
        text = self.text
        left = text[i - 1] if i > 0 else " "
        right = text[i + 1] if i + 1 < self.n else " "
        if left.isspace() and right.isspace():
            return True
        if left.isspace() and right.isalpha():
            return False  # *emphasis*
        if left.isalpha() and (right.isspace() or right in ".,;:!?"):
            return False
        return True

    def _slash_is_operator(self, i: int) -> bool:
        text = self.text
        if text[i - 1:i + 1] == "//" or text[i:i + 2] == "//":
            return text[i - 2:i - 1].isdigit() or text[i + 2:i + 3].isdigit()
        line_start, _ = self.line_bounds(i)
        left = text[i - 1] if i > 0 else " "
        right = text[i + 1] if i + 1 < self.n else " "
        if left.isalpha() and right.isalpha():
            # "12 inches/foot" (a unit ratio after a number) is math; "he/she", "and/or" are not.
            j = i - 1
            while j > line_start and text[j - 1].isalpha():
                j -= 1
            before, _ = self.neighbour(j, -1)
            return bool(before) and (before.isdigit() or before in "%$)" or before in _OPERATOR_CHARS)
        return True

    def _dash_is_minus(self, i: int) -> bool:
        text = self.text
        left = text[i - 1] if i > 0 else " "
        right = text[i + 1] if i + 1 < self.n else " "
        if text[i - 1:i] in "-–" and i > 0 or text[i + 1:i + 2] in ("-", "–") and i + 1 < self.n:
            return False  # "--" dashes
        if left.isalpha() and right.isalpha():
            return False
        if left.isdigit() and right.isalpha():
            return False  # "10-foot"
        if right.isdigit() or right in "($.\\":
            return True
        if left in " \t" and right in " \t":
            line_start, line_end = self.line_bounds(i)
            return any(c.isdigit() for c in text[line_start:line_end])
        if (left.isdigit() or left in ")%") and right in " \t":
            return True
        return False

    def single_letters(self) -> None:
        for m in _SINGLE_LETTER.finditer(self.text):
            i = m.start()
            if self.labels[i] is not None:
                continue
            ch = m.group(1)
            left, _ = self.neighbour(i, -1)
            right, _ = self.neighbour(i, 1)
            operator_near = any(c and (c in _OPERATOR_CHARS or c in "*/-") for c in (left, right))
            if left.isdigit() and ch in _UNIT_LETTERS and not operator_near:
                self.mark(i, i + 1, ENT)  # "5 m", "3 h": a unit symbol
            elif ch in "aAI":
                if operator_near and not (ch == "A" and right == ":"):
                    self.mark(i, i + 1, SYMB)
            else:
                self.mark(i, i + 1, SYMB)

    def brackets(self) -> None:
        pairs = {")": "(", "]": "["}
        pos = 0
        while pos < self.n:
            end = self.text.find("\n", pos)
            end = self.n if end < 0 else end
            stack: list[int] = []
            for i in range(pos, end):
                ch = self.text[i]
                if self.labels[i] is not None:
                    continue
                if ch in "([":
                    stack.append(i)
                elif ch in ")]" and stack and self.text[stack[-1]] == pairs[ch]:
                    opening = stack.pop()
                    if self._bracket_is_math(opening, i):
                        unit = self.mark(opening, opening + 1, SYMB)
                        self.mark(i, i + 1, SYMB, unit=unit)
            pos = end + 1

    def _bracket_is_math(self, opening: int, closing: int) -> bool:
        body = range(opening + 1, closing)
        has_math = any(self.labels[j] == SYMB for j in body)
        if not has_math:
            return False
        has_operator = any(self.labels[j] == SYMB and not self.text[j].isalnum() and self.text[j] not in _CURRENCY + ".,"
                           for j in body)
        left, _ = self.neighbour(opening, -1)
        right, _ = self.neighbour(closing, 1)
        touches = any(c and (c.isdigit() or c in _OPERATOR_CHARS or c in "*/-%") for c in (left, right))
        prose_words = re.search(r"[A-Za-z]{3,}", "".join(
            self.text[j] if self.labels[j] is None else " " for j in body))
        return has_operator or touches or prose_words is None

    def finish_mask(self) -> None:
        # Masked region characters next to prose would glue onto a word ("apples0"): use a space.
        for i in range(self.n):
            if self.mask[i] == "0" and self.region[i]:
                for j in (i - 1, i + 1):
                    if 0 <= j < self.n and not self.region[j] and self.text[j].isalnum():
                        self.mask[i] = " "


def _matching_brace(text: str, open_index: int, limit: int) -> int | None:
    depth = 0
    for i in range(open_index, limit):
        ch = text[i]
        if ch == "\\":
            continue
        if ch == "{" and text[i - 1:i] != "\\":
            depth += 1
        elif ch == "}" and text[i - 1:i] != "\\":
            depth -= 1
            if depth == 0:
                return i
    return None


def _is_numeric_char(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in ("Nd", "No", "Nl")


def lex(text: str, spec: TaxonomySpec) -> LexResult:
    """Pre-label the math and markup characters of ``text`` (see module docstring)."""
    return _Lexer(text, spec).run()
