"""Word rules: the fine label of a prose word from spaCy's analysis, the lexicons and the question.

Each rule implements a line of the guideline's "Decisions for hard cases" (also written into the
spec's ``decisions``). Rules are tried in the guideline's overlap order where a word fits several
labels; sense decisions (``times``, ``it``, ``that``, ``one``, ``now`` ...) look at the parse.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .mathlex import COREF, CONTENT, ENT, FUNC, META, VERB_
from .spec import TaxonomySpec

_VERBISH = ("VERB", "AUX")
_GRAMMAR_POS = ("DET", "ADP", "CCONJ", "SCONJ", "PART", "PUNCT", "SYM", "SPACE", "PRON", "INTJ", "X", "AUX")
_NOT_DIFFERENCE_COMPARATIVES = {"rather", "later", "earlier", "further", "farther", "sooner", "better", "worse", "other"}
_MULTIPLIER_FOLLOWERS = {"as", "more", "less", "fewer", "the", "that", "this", "these", "those", "his", "her", "its",
                         "their", "my", "our", "your", "what", "a", "an", "many", "much", "bigger", "larger", "greater",
                         "longer", "higher", "faster", "heavier", "older", "cheaper", "smaller", "shorter"}
_AUTHOR_SUBJECTS = {"we", "i", "you", "us", "'s", "let", "one", "me"}
_PARTICLES = {"in", "on", "at", "into", "onto", "by", "with", "from", "to", "of", "off", "out", "up", "down", "over",
              "under", "through", "around", "along", "across", "away", "back", "about"}
_DURATIONS = {"second", "minute", "hour", "day", "week", "month", "year", "time", "while", "moment"}
_ABSTRACT_SUFFIX = re.compile(r"(?:tion|sion|ment|ness|ity|ance|ence|ship|ism|ing|cy|ure|ics)s?$")
_META_HEADED = {"answer", "step", "steps", "result", "solution", "calculation", "equation", "tally", "count", "check"}


@dataclass
class QuestionContext:
    """What the rules learn from the question: its names, nouns and who it addresses."""

    names: set = field(default_factory=set)
    nouns: set = field(default_factory=set)
    addresses_reader: bool = False
    first_person: bool = False
    counts_steps: bool = False
    words: set = field(default_factory=set)


def question_context(doc, spec: TaxonomySpec) -> QuestionContext:
    """Learn the problem's entities from a spaCy doc of the question.

    Only the tagger's fine tags are read (the question is analysed without parser, attribute
    ruler and lemmatizer, for speed), so nouns are stored lower-cased and naively singularised.
    """
    ctx = QuestionContext()
    if doc is None:
        return ctx
    abstract = spec.lexicon("abstract_nouns") | spec.lexicon("meta_nouns") | spec.lexicon("operation_words")
    for tok in doc:
        low = tok.lower_
        forms = {low, singular(low)}
        if tok.is_alpha:
            ctx.words.update(forms)
        capitalised_inside = tok.i > 0 and tok.text[:1].isupper() and doc[tok.i - 1].text not in (".", "!", "?", ":") \
            and "\n" not in doc[tok.i - 1].text and tok.tag_ not in ("PRP", "PRP$", "DT", "IN", "CC", "MD")
        if (tok.tag_ in ("NNP", "NNPS") or capitalised_inside) and tok.is_alpha and not forms & abstract:
            ctx.names.add(low)
        elif tok.tag_ in ("NN", "NNS") and tok.is_alpha and not forms & abstract:
            ctx.nouns.update(forms)
        if low in ("you", "your", "yours"):
            ctx.addresses_reader = True
        elif low in ("i", "my", "me", "mine"):
            ctx.first_person = True
        if forms & {"step", "stair", "staircase", "stairway"}:
            ctx.counts_steps = True
    return ctx


def singular(word: str) -> str:
    """A naive English singular (enough to match 'boxes'/'box', 'berries'/'berry', 'eggs'/'egg')."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


class RuleLabeller:
    """Labels spaCy tokens of a reasoning text (those the lexer left to prose)."""

    def __init__(self, spec: TaxonomySpec) -> None:
        self.spec = spec
        lex = spec.lexicon
        self.op = lex("operation_words")
        self.numbers = lex("number_words")
        self.ordinals = lex("ordinal_words")
        self.discourse = lex("discourse_markers")
        self.planning = lex("planning_verbs")
        self.subject_planning = lex("subject_planning_verbs")
        self.meta_nouns = lex("meta_nouns")
        self.authorial = lex("authorial_pronouns")
        self.reader = lex("reader_pronouns")
        self.coref = lex("coref_pronouns")
        self.demonstratives = lex("demonstratives")
        self.relatives = lex("relative_pronouns")
        self.anaphoric = lex("anaphoric_heads")
        self.abstract = lex("abstract_nouns")
        self.entities = lex("entity_nouns") | lex("months_and_days")
        self.months = lex("months_and_days")
        self.per_nouns = lex("per_nouns")
        self.grammar = lex("grammar_adverbs")

    # ---------------------------------------------------------------------- API
    def label(self, tok, ctx: QuestionContext) -> str:
        """Fine label of one spaCy token."""
        text = tok.text
        low = tok.lower_.replace("’", "'")
        if not any(ch.isalnum() for ch in text):
            return META if low in ("'s",) and _prev_lower(tok) == "let" else FUNC
        if low in ("'s", "s") and tok.i > 0 and _prev_lower(tok) == "let":
            return META
        if tok.tag_ == "POS" or low in ("'s", "'"):
            return FUNC
        if low in ("mr.", "mrs.", "ms.", "dr.", "mr", "mrs", "ms", "dr", "st."):
            return ENT
        for rule in (self._verbal_math, self._coreference, self._entity_proper, self._meta, self._grammar):
            label = rule(tok, low, ctx)
            if label is not None:
                return label
        return self._open_class(tok, low, ctx)

    def label_word(self, word: str, ctx: QuestionContext) -> str:
        """Label of a word fragment without a parse (pieces of tokens glued to math, '60mph')."""
        low = word.lower()
        singular = low[:-1] if low.endswith("s") else low
        if low in self.op or low in self.numbers:
            return VERB_
        if low in self.authorial:
            return META
        if low in self.coref:
            return COREF
        if {low, singular} & (self.entities | ctx.nouns | ctx.names):
            return ENT
        if low in self.meta_nouns or low in self.discourse or low in self.planning:
            return META
        if low in self.grammar:
            return FUNC
        return CONTENT

    # -------------------------------------------------------------- verbal math
    def _verbal_math(self, tok, low, ctx):
        lemma = tok.lemma_.lower()
        if low in self.ordinals:
            return self._ordinal(tok, low)
        if low == "one" or low == "ones":
            return COREF if self._pro_one(tok) else VERB_
        if low in self.numbers or (tok.like_num and tok.is_alpha):
            return VERB_
        if low == "times":
            return VERB_ if self._multiplier(tok) else ENT
        if low in ("a", "an"):
            return VERB_ if self._article_means_per(tok) else None
        if low == "left":
            return CONTENT if tok.tag_ == "VBD" and any(c.dep_ == "dobj" for c in tok.children) else VERB_
        if low == "remaining":
            return COREF if _prev_lower(tok) in ("the", "his", "her", "their", "its") else VERB_
        if low in ("more", "less", "most", "least") and tok.pos_ in ("ADV",) and tok.head.pos_ in ("ADJ", "ADV") \
                and tok.head.tag_ not in ("JJR", "RBR") and low in ("most", "least"):
            return FUNC  # "the most likely": a degree word, not a quantity
        if low == "all" and _prev_lower(tok) == "in" and _next_lower(tok) in ("", ".", ",", ":", ";", "!", "?", "\n"):
            return VERB_  # "in all" = altogether
        if tok.i + 2 < len(tok.doc) and tok.nbor(1).text == "-" and tok.nbor(2).lower_ in ("check", "checking",
                                                                                       "checked", "evaluate"):
            return META  # "double-check", "re-evaluate" (split by the tokenizer)
        if low == "addition" and _prev_lower(tok) == "in":
            return META  # "In addition to ...": a connective
        if lemma == "mean" and tok.pos_ in _VERBISH:
            return None  # "this means": reasoning vocabulary, not the average
        if low in self.op or lemma in self.op:
            return VERB_
        if tok.tag_ in ("JJR", "RBR") and low not in _NOT_DIFFERENCE_COMPARATIVES:
            return VERB_
        return None

    def _pro_one(self, tok) -> bool:
        prev = tok.nbor(-1) if tok.i > 0 else None
        nxt = tok.nbor(1) if tok.i + 1 < len(tok.doc) else None
        if (nxt is not None and nxt.lower_ == "of") or tok.dep_ in ("nummod", "quantmod"):
            return False
        if tok.lower_ == "ones":
            return True
        if tok.dep_ in ("nsubj", "dobj", "pobj", "conj", "appos", "attr") and any(
                c.dep_ in ("amod", "prep", "relcl", "acl", "det") for c in tok.children):
            return True  # "one worth twice that", "the one on the left"
        if prev is not None and (prev.pos_ in ("DET", "ADJ") or prev.lower_ in ("each", "every", "another")) \
                and prev.lower_ not in ("a", "an"):
            return True
        return tok.tag_ == "NN" and tok.dep_ in ("nsubj", "dobj", "pobj", "conj", "appos")

    def _ordinal(self, tok, low):
        head = tok.head
        if low == "second" and tok.pos_ == "NOUN" and (_prev_lower(tok) in ("a", "per", "each", "every", "one")
                                                        or tok.nbor(-1).like_num if tok.i > 0 else False):
            return ENT  # the unit of time
        if low in ("final", "last") and (head.lower_ in self.meta_nouns or head.lemma_.lower() in _META_HEADED
                                          or _next_lower(tok) in self.meta_nouns):
            return META
        if self._sentence_initial(tok) and tok.pos_ in ("ADV", "ADJ", "INTJ", "PROPN", "NOUN"):
            nxt = tok.nbor(1) if tok.i + 1 < len(tok.doc) else None
            if nxt is None or nxt.text in (",", ":", ".") or nxt.lower_ in self.authorial or nxt.lower_ in ("let", "to") \
                    or (nxt.pos_ == "VERB" and nxt.tag_ == "VB"):
                return META  # "First, we ...", "Next find ...", "Finally:"
        if low in ("next", "previous", "original", "initial") and tok.pos_ != "ADJ":
            return META
        if low == "next" and head.lemma_.lower() in ("step", "part"):
            return META
        return VERB_

    def _multiplier(self, tok) -> bool:
        nxt = tok.nbor(1) if tok.i + 1 < len(tok.doc) else None
        if nxt is None:
            return False
        if nxt.lower_ in _MULTIPLIER_FOLLOWERS or nxt.tag_ in ("JJR", "RBR", "CD") or nxt.like_num:
            return True
        if nxt.text in ("$", "(") or nxt.text[:1].isdigit():
            return True
        prev = tok.nbor(-1) if tok.i > 0 else None
        return nxt.pos_ == "NOUN" and prev is not None and prev.like_num and nxt.lower_ not in self.per_nouns

    def _article_means_per(self, tok) -> bool:
        head = tok.head
        if head.i <= tok.i or head.lemma_.lower() not in self.per_nouns:
            return False
        if head.dep_ == "npadvmod":
            return True
        prev = tok.nbor(-1) if tok.i > 0 else None
        after = head.nbor(1) if head.i + 1 < len(tok.doc) else None
        if after is not None and after.lower_ == "of":
            return False
        return prev is not None and (prev.tag_ in ("NNS", "NN", "CD", "RB") or prev.like_num or prev.lower_ in
                                     ("twice", "once", "times", "thrice", "dollars", "cents"))

    # --------------------------------------------------------------- coreference
    def _coreference(self, tok, low, ctx):
        if low in self.authorial:
            return COREF if (ctx.first_person and low in ("i", "me", "my", "mine", "myself")) else META
        if low in self.reader:
            return COREF if ctx.addresses_reader else META
        if low == "it":
            return FUNC if self._expletive_it(tok) else COREF
        if low in self.coref:
            return COREF
        if low == "that":
            if tok.tag_ == "WDT":
                return COREF
            if tok.tag_ == "IN" or tok.dep_ == "mark" or self._complementizer(tok):
                return FUNC
            return FUNC if self._cataphoric(tok) else COREF
        if low in self.demonstratives:
            if _next_lower(tok) in ("many", "much") and low in ("this", "that"):
                return FUNC  # "This many penguins": a degree word
            return FUNC if self._cataphoric(tok) else COREF
        if low in self.relatives:
            return COREF if tok.tag_ in ("WDT", "WP", "WP$") and not self._interrogative(tok) else FUNC
        if low in self.anaphoric:
            return self._anaphoric_head(tok, low)
        return None

    def _expletive_it(self, tok) -> bool:
        head = tok.head
        if tok.dep_ not in ("nsubj", "nsubjpass", "expl"):
            return False
        if tok.dep_ == "expl":
            return True
        children = list(head.children)
        infinitive = any(c.dep_ in ("xcomp", "advcl", "ccomp", "csubj") and any(g.lower_ == "to" for g in c.children)
                         for c in children)
        later_clause = any(c.dep_ in ("xcomp", "advcl", "ccomp") and c.i > head.i for c in children)
        if head.lemma_ in ("take", "cost") and (any(c.dep_ == "dative" for c in children) or infinitive):
            return True
        if head.lemma_ == "take" and any(c.dep_ in ("dobj", "npadvmod", "attr") and c.lemma_.lower() in _DURATIONS
                                         for c in children):
            return True  # "It will take one hour": time taken, no referent
        if head.lemma_ == "take" and any(t.lower_ == "to" and t.i + 1 < len(t.doc) and t.nbor(1).tag_ == "VB"
                                         for t in tok.sent if t.i > head.i):
            return True  # "It will take one person 4 hours to ..."
        if head.lemma_ == "be" and any(c.dep_ in ("acomp", "attr") for c in children) and later_clause:
            return True
        if head.lemma_ in ("seem", "appear", "make", "follow", "turn") and later_clause:
            return True
        return False

    def _complementizer(self, tok) -> bool:
        # "we know that she ...", "verify that 72 ...": after a verb, opening a clause.
        if tok.i == 0 or tok.i + 1 >= len(tok.doc):
            return False
        prev, nxt = tok.nbor(-1), tok.nbor(1)
        opens_clause = nxt.pos_ in ("PRON", "DET", "NUM", "PROPN") or nxt.text[:1].isdigit() or nxt.text[:1] in "$0\\"
        return prev.pos_ in ("VERB", "AUX") and prev.dep_ != "aux" and opens_clause and nxt.lower_ not in ("is", "'s")

    def _cataphoric(self, tok) -> bool:
        # "follow these steps:", "the following:", "this way:" point forward, not back.
        doc = tok.doc
        for j in range(tok.i + 1, min(tok.i + 4, len(doc))):
            if doc[j].text == ":":
                return True
            if doc[j].is_punct or doc[j].pos_ == "VERB":
                break
        return False

    def _interrogative(self, tok) -> bool:
        sent = tok.sent
        return tok.i == sent.start and sent.text.rstrip().endswith("?")

    def _anaphoric_head(self, tok, low):
        prev = _prev_lower(tok)
        if low in ("rest", "same", "former", "latter", "aforementioned", "above", "said"):
            return COREF if prev in ("the", "this", "that", "his", "her", "their", "its") else None
        if low in ("other", "others"):
            return COREF if prev == "the" and tok.dep_ not in ("amod",) else None
        return COREF

    # ---------------------------------------------------------------- entities
    def _entity_proper(self, tok, low, ctx):
        if tok.pos_ == "PROPN" or tok.tag_ in ("NNP", "NNPS"):
            if low in self.meta_nouns or low in self.discourse or low in self.grammar or low in self.planning:
                return None
            if tok.text[:1].isupper() or low in ctx.names:
                return ENT
        if low in ctx.names and tok.text[:1].isupper():
            return ENT
        if low in self.months and tok.text[:1].isupper() and (low != "may" or _prev_lower(tok) in
                                                                ("in", "of", "on", "since", "until", "by", "during")):
            return ENT
        return None

    # -------------------------------------------------------------------- meta
    def _meta(self, tok, low, ctx):
        lemma = tok.lemma_.lower()
        if low == "now":
            return META if self._discourse_now(tok) else CONTENT
        if low == "let" and (_next_lower(tok) in ("'s", "us", "s") or self._sentence_initial(tok)):
            return META  # "Let's", "Let x be": the author organising the solution
        if low == "so" and tok.i + 1 < len(tok.doc) and tok.nbor(1).lower_ in ("many", "much", "far", "long"):
            return FUNC
        if low in ("given",):
            return META if self._sentence_initial(tok) or _next_lower(tok) == "that" else None
        if low in ("right", "correct", "well", "yes", "great", "again", "simply", "basically", "essentially"):
            return META if self._sentence_initial(tok) and _next_lower(tok) in (",", "!", ".", "") else None
        if low in self.discourse:
            return META
        if lemma in ("step",) or low in ("step", "steps"):
            return self._step(tok, ctx)
        if (low in self.planning or lemma in self.planning) and self._sentence_initial(tok) \
                and tok.tag_ in ("VB", "NNP", "NN"):
            return META  # "### Solve for x", "Define variables": imperatives the tagger read as nouns
        if tok.pos_ in _VERBISH or tok.tag_.startswith("VB"):
            if lemma in self.planning or low in self.planning:
                return META
            if lemma in self.subject_planning and self._authorial_subject(tok):
                return META
            return None
        if tok.pos_ in ("NOUN", "PROPN") and (lemma in self.meta_nouns or low in self.meta_nouns):
            if ({lemma, low} & (ctx.nouns | ctx.names | ctx.words)) and lemma not in ("answer", "solution", "step"):
                return None  # "15 math questions" of the story are things of the problem
            if lemma in ("part", "way", "case", "detail", "fact", "work", "plan", "goal", "option", "check", "note"):
                return META if self._meta_context(tok) else None
            return META
        return None

    def _step(self, tok, ctx):
        prev = tok.nbor(-1) if tok.i > 0 else None
        if ctx.counts_steps and prev is not None and (prev.like_num or prev.text[:1].isdigit()) and tok.lower_ == "steps":
            return ENT
        return META

    def _discourse_now(self, tok) -> bool:
        if not self._sentence_initial(tok):
            return False
        nxt = _next_lower(tok)
        return nxt in (",", "we", "i", "let", "let's", "to", "you", "that", "using", "since", "for", "add", "multiply",
                       "divide", "subtract", "calculate", "find", "")

    def _authorial_subject(self, tok) -> bool:
        """Is the verb's subject the author or the reader (or absent: imperative, infinitive)?"""
        if tok.tag_ == "VB" and not any(c.dep_ in ("nsubj", "nsubjpass") for c in tok.children):
            j = tok.i - 1
            while j >= 0 and (tok.doc[j].lower_ in self.discourse or tok.doc[j].is_punct or tok.doc[j].is_space
                              or not tok.doc[j].text.strip()):
                if "\n" in tok.doc[j].text:
                    break
                j -= 1
            if j < 0 or "\n" in tok.doc[j].text or tok.doc[j].text in ".!?:;":
                return True  # a line-initial imperative: "First find ...", "Then calculate ..."
        if tok.tag_ == "VBG" and self._sentence_initial(tok):
            return True  # the author's action or a heading: "Rounding to ...", "### Understanding the problem"
        if tok.tag_ in ("VBG", "VBN") and not any(c.dep_ in ("nsubj", "nsubjpass") for c in tok.children):
            return False  # a participle or gerund of the story: "from starting the oil"
        if tok.dep_ in ("aux", "auxpass"):
            return False  # "he gets paid"
        head = tok
        for _ in range(6):
            subjects = [c for c in head.children if c.dep_ in ("nsubj", "nsubjpass")]
            if subjects:
                return subjects[0].lower_ in _AUTHOR_SUBJECTS
            infinitive = any(c.lower_ == "to" and c.dep_ == "aux" for c in head.children)
            if head.dep_ == "acl" and infinitive and head.head.head is not head.head:
                head = head.head.head  # "add the amounts to find ...": a purpose clause read as a relative
                continue
            if head.dep_ in ("acl", "relcl", "amod", "compound") and not infinitive:
                return False  # a participle describing a story noun: "the cubes used up"
            if head.pos_ not in _VERBISH and head is not tok:
                return True  # climbed to a mis-tagged governor ("multiply" read as a noun): no subject
            if head.dep_ not in ("xcomp", "ccomp", "advcl", "conj", "pcomp", "prep") or head.head is head:
                return tok.tag_ == "VB"  # imperative or infinitive without a subject; a finite verb is the story's
            head = head.head
        return tok.tag_ == "VB"

    def _meta_context(self, tok) -> bool:
        return any(c.lower_ in ("this", "first", "next", "last", "final", "each") or c.lower_ in self.authorial
                   for c in tok.children)

    # ----------------------------------------------------------------- grammar
    def _grammar(self, tok, low, ctx):
        lemma = tok.lemma_.lower()
        if low in self.grammar:
            if low == "down" and tok.dep_ in ("compound", "amod"):
                return None  # "down payment"
            return FUNC
        if low in _PARTICLES and tok.pos_ in ("ADV", "ADP", "PART") and tok.dep_ not in ("compound", "amod"):
            return FUNC
        if low in ("lot", "lots") and _next_lower(tok) == "of":
            return FUNC  # "a lot of": a quantifier
        if lemma == "go" and _next_lower(tok) == "to" and tok.i + 2 < len(tok.doc) and tok.nbor(2).tag_ == "VB" \
                and tok.tag_ == "VBG":
            return FUNC  # "is going to contribute": future auxiliary
        if tok.pos_ == "AUX" or tok.tag_ == "MD" or tok.dep_ in ("aux", "auxpass"):
            return FUNC
        if lemma == "be":
            return FUNC
        if lemma in ("have", "ought") and _next_lower(tok) == "to" and tok.i + 2 < len(tok.doc) \
                and tok.nbor(2).pos_ in ("VERB", "AUX"):
            return FUNC  # semi-modal "has to", "used to"
        if lemma in ("have", "get") and tok.dep_ in ("aux", "auxpass"):
            return FUNC
        if tok.pos_ in ("DET", "ADP", "CCONJ", "SCONJ", "PART") or tok.tag_ in ("DT", "IN", "CC", "TO", "RP", "EX",
                                                                                  "PDT", "WRB", "WP", "WDT"):
            return FUNC
        if tok.pos_ == "PRON":
            return FUNC
        return None

    # -------------------------------------------------------------- open class
    def _open_class(self, tok, low, ctx):
        lemma = tok.lemma_.lower()
        if tok.tag_ == "VBZ" and tok.i > 0 and tok.nbor(-1).text[:1].isdigit() and lemma not in ("be", "have", "do"):
            return ENT  # "3 sapphires" mis-tagged as a verb: a counted object
        if tok.pos_ in ("NOUN", "PROPN", "NUM") or tok.tag_.startswith("NN"):
            return ENT if self._entity_noun(tok, low, lemma, ctx) else CONTENT
        if (tok.dep_ == "compound" or low == "down") and tok.pos_ in ("ADJ", "ADV") and self._entity_noun(tok.head, tok.head.lower_,
                                                                             tok.head.lemma_.lower(), ctx):
            return ENT
        if tok.pos_ in ("VERB", "ADJ", "ADV"):
            return CONTENT
        if tok.pos_ in _GRAMMAR_POS and not tok.is_alpha:
            return FUNC
        if tok.is_alpha:
            return ENT if low in ctx.nouns or low in ctx.names else CONTENT
        return FUNC

    def _entity_noun(self, tok, low, lemma, ctx, depth: int = 0) -> bool:
        if depth < 2 and tok.dep_ == "compound" and tok.head is not tok and tok.head.pos_ in ("NOUN", "PROPN"):
            head = tok.head  # a modifier inside a compound name: "sales tax", "golf balls"
            if self._entity_noun(head, head.lower_, head.lemma_.lower(), ctx, depth + 1):
                return True
        if lemma in self.abstract or low in self.abstract:
            return False
        if lemma in self.entities or low in self.entities or lemma in ctx.nouns or low in ctx.nouns:
            return True
        if low in ctx.names:
            return True
        if any(c.dep_ == "nummod" for c in tok.children):
            return True
        prev = tok.nbor(-1) if tok.i > 0 else None
        if prev is not None and (prev.like_num or prev.text[:1].isdigit() or prev.lower_ in self.numbers):
            return True
        # The guideline's CONTENT nouns are attribute and abstract nouns; every other common noun names
        # counted things of the problem.
        acts_as_verb = any(c.dep_ in ("nsubj", "nsubjpass") for c in tok.children)
        return tok.tag_ in ("NNS", "NN") and not acts_as_verb and not _ABSTRACT_SUFFIX.search(low)

    def _sentence_initial(self, tok) -> bool:
        """First word of its sentence or line (after markup and punctuation)."""
        doc = tok.doc
        j = tok.i - 1
        while j >= 0:
            before = doc[j]
            if "\n" in before.text:
                return True
            if not before.text.strip() or (before.is_punct and before.text not in ".!?:;"):
                j -= 1
                continue
            break
        return j < 0 or doc[j].text in (".", "!", "?", ":", ";") or tok.is_sent_start


def _prev_lower(tok) -> str:
    doc = tok.doc
    j = tok.i - 1
    while j >= 0 and doc[j].is_space:
        j -= 1
    return doc[j].lower_.replace("’", "'") if j >= 0 else ""


def _next_lower(tok) -> str:
    doc = tok.doc
    j = tok.i + 1
    while j < len(doc) and doc[j].is_space:
        j += 1
    return doc[j].lower_.replace("’", "'") if j < len(doc) else ""


__all__ = ["QuestionContext", "RuleLabeller", "question_context", "singular"]
