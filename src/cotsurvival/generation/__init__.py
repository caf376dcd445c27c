"""Teacher chains: the model writes its own chains of thought, kept only when its answer is right.

The published study pruned chains the model wrote itself, found by rejection sampling (up to 10
samples at temperature 0.7, the first correct one kept). :func:`generate_chains` does that for
any questions with gold answers; :mod:`.verify` decides correctness for numbers, LaTeX and
multiple-choice letters.
"""
from __future__ import annotations

from .generate import GenerationResult, SampleResult, generate_chains, score_response
from .prompting import BUILTIN_PROMPTS, Prompt, SplitResponse, load_prompt, split_response
from .questions import Question, gold_from_answer, read_questions
from .verify import answers_match, parse_choice, parse_math, parse_number

__all__ = [
    "BUILTIN_PROMPTS", "GenerationResult", "Prompt", "Question", "SampleResult", "SplitResponse", "answers_match",
    "generate_chains", "gold_from_answer", "load_prompt", "parse_choice", "parse_math", "parse_number",
    "read_questions", "score_response", "split_response",
]
