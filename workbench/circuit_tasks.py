"""Prompt tasks for circuit discovery: matched positive and negative prompts of one token length.

A task gives `pairs` prompts twice: positives the model can complete (IOI, greater-than, docstring
parameter, induction) and, row for row, a negative that changes only what makes the answer
predictable (O'Neill & Bui 2024, sec. 3; METHODS.md section 5). Negative i is also the corrupted
run of positive i for resample ablation and attribution patching.

The metric is a logit difference between two token sets at the last position,
    LD = logsumexp(logits[correct]) - logsumexp(logits[wrong]),
which is the usual IO - S logit difference when both sets have one token.

Every piece that varies (names, years, parameter names) must be one token, so all prompts of a
task share one length; `build_task` refuses words that are not and prompts that differ in length
before any model work.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

NAMES = ("Mary", "John", "Tom", "James", "Paul", "Anna", "Sarah", "David", "Michael", "Lisa", "Mark", "Peter",
         "Kate", "Emma", "Jack", "Alice", "Bob", "Susan", "Robert", "Laura", "Daniel", "Steve", "Helen", "Chris",
         "Frank", "George", "Linda", "Karen", "Nancy", "Rose", "Sam", "Ben", "Max", "Adam", "Ryan", "Eric")
PLACES = ("store", "park", "school", "beach", "office", "market", "station", "garden")
OBJECTS = ("drink", "book", "ball", "gift", "letter", "ring", "bag", "key")
EVENTS = ("war", "project", "journey", "trial", "strike", "siege", "festival", "drought")
PARAMETERS = ("files", "size", "data", "name", "path", "mode", "key", "value", "count", "index", "user", "text",
              "url", "port", "host", "model", "config", "items", "limit", "offset", "source", "target", "color",
              "width", "height", "timeout", "level", "label", "format", "query")
FUNCTIONS = ("load", "save", "run", "update", "check", "parse", "build", "send")
DESCRIPTIONS = ("the", "a", "new", "old", "first", "last", "main", "local")
INDUCTION_LENGTH = 8
"""Random tokens in the first half of an induction prompt."""
INDUCTION_REPEATED = 5
"""Tokens of the first half repeated before the model must predict the next one."""


@dataclass(frozen=True)
class Task:
    """Positives `tokens[:pairs]`, their matched negatives `tokens[pairs:]`, and the answer sets."""

    name: str
    tokens: Tensor
    """[2 * pairs, length] token ids."""
    correct: list[list[int]]
    """Per prompt: the tokens that complete it correctly (meaningless for negatives)."""
    wrong: list[list[int]]
    """Per prompt: the competing tokens of the logit difference."""

    @property
    def pairs(self) -> int:
        return self.tokens.shape[0] // 2


class TaskError(ValueError):
    """A task's prompts cannot be used (a word is not one token, lengths differ, unknown task)."""


def answer_masks(ids: Sequence[Sequence[int]], vocab: int) -> Tensor:
    """[len(ids), vocab] bool: row i marks the tokens in ids[i]."""
    mask = torch.zeros(len(ids), vocab, dtype=torch.bool)
    for row, tokens in enumerate(ids):
        mask[row, list(tokens)] = True
    return mask


def logit_difference(last_logits: Tensor, correct: Tensor, wrong: Tensor) -> Tensor:
    """[B] logsumexp over the correct tokens minus over the wrong ones (masks [B, vocab])."""
    low = torch.finfo(last_logits.dtype).min
    return (last_logits.masked_fill(~correct, low).logsumexp(-1)
            - last_logits.masked_fill(~wrong, low).logsumexp(-1))


class _Words:
    """Single-token lookups against one tokenizer (a leading space, as the words appear mid-sentence)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def id(self, word: str, space: bool = True) -> int:
        text = (" " if space else "") + word
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise TaskError(f"{word!r} is {len(ids)} tokens for this tokenizer; every varied word must be one token")
        return int(ids[0])

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _ioi(words: _Words, rng: random.Random) -> tuple[str, str, list[int], list[int]]:
    a, b, c = rng.sample(NAMES, 3)
    place, thing = rng.choice(PLACES), rng.choice(OBJECTS)
    first, second = (a, b) if rng.random() < 0.5 else (b, a)  # ABBA or BABA
    template = "When {} and {} went to the {}, {} gave a {} to"
    positive = template.format(first, second, place, b, thing)
    negative = template.format(first, second, place, c, thing)
    return positive, negative, [words.id(a)], [words.id(b)]


def _greater_than(words: _Words, rng: random.Random) -> tuple[str, str, list[int], list[int]]:
    tens, units = rng.randint(2, 8), rng.randint(0, 9)
    template = "The {} lasted from the year 17{}{} to the year 17"
    event = rng.choice(EVENTS)
    digit = [words.id(str(d), space=False) for d in range(10)]
    return (template.format(event, tens, units), template.format(event, 0, 1),
            digit[tens + 1:], digit[:tens])


def _docstring(words: _Words, rng: random.Random) -> tuple[str, str, list[int], list[int]]:
    params = rng.sample(PARAMETERS, 6)
    function, d1, d2 = rng.choice(FUNCTIONS), rng.choice(DESCRIPTIONS), rng.choice(DESCRIPTIONS)
    body = '):\n    """{} {}.\n\n    :param {}: {} {}\n    :param {}: {} {}\n    :param'
    doc = body.format(function.capitalize(), d1, params[0], d1, params[0], params[1], d2, params[1])
    positive = f"def {function}(self, {params[0]}, {params[1]}, {params[2]}" + doc
    negative = f"def {function}(self, {params[3]}, {params[4]}, {params[5]}" + doc
    return positive, negative, [words.id(params[2])], [words.id(p) for p in params[:2]]


def _induction(words: _Words, rng: random.Random) -> tuple[list[int], list[int], list[int], list[int]]:
    pool = sorted({words.id(word) for word in NAMES + PLACES + OBJECTS + EVENTS + PARAMETERS})
    first = rng.sample(pool, INDUCTION_LENGTH)
    cut = INDUCTION_REPEATED
    other = rng.sample([t for t in pool if t not in first], cut)
    return (first + first[:cut], first + other, [first[cut]], [t for t in first if t != first[cut]])


TASKS: dict[str, Callable[[_Words, random.Random], tuple]] = {
    "ioi": _ioi, "greater-than": _greater_than, "docstring": _docstring, "induction": _induction}
"""Task name -> generator of one (positive, negative, correct ids, wrong ids); prompts are text or ids."""


def build_task(name: str, tokenizer, pairs: int, seed: int) -> Task:
    """`pairs` candidate positive/negative pairs of one task; TaskError before any model work if a
    varied word is not one token or the prompts are not all one length."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    words, rng = _Words(tokenizer), random.Random(seed)
    rows = [TASKS[name](words, rng) for _ in range(pairs)]
    encoded = [[p if isinstance(p, list) else words.encode(p) for p in row[:2]] for row in rows]
    return task_from_prompts(name, [e[0] for e in encoded], [e[1] for e in encoded],
                             [row[2] for row in rows], [row[3] for row in rows])


def task_from_prompts(name: str, positives: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]],
                      correct: Sequence[Sequence[int]], wrong: Sequence[Sequence[int]]) -> Task:
    """A Task from token lists, refusing prompts of different lengths or unmatched counts."""
    if len(positives) != len(negatives) or not positives:
        raise TaskError(f"task {name!r}: needs as many negatives as positives "
                        f"(got {len(positives)} and {len(negatives)})")
    lengths = sorted({len(p) for p in [*positives, *negatives]})
    if len(lengths) != 1:
        raise TaskError(f"task {name!r}: prompts tokenize to different lengths {lengths}; all must be equal")
    if any(not c or not w for c, w in zip(correct, wrong)):
        raise TaskError(f"task {name!r}: every positive needs a non-empty correct and wrong answer set")
    tokens = torch.tensor([list(p) for p in [*positives, *negatives]])
    return Task(name, tokens, [list(c) for c in correct] * 2, [list(w) for w in wrong] * 2)
