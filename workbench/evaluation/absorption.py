"""Feature absorption on the first-letter task (Chanin et al. 2024, "A is for Absorption"; SAEBench).

A linear probe reads "this word starts with L" from the activations. The dictionary's main latent
for L is the one whose mean activation differs most between L-words and other words (as in sparse
probing). Absorption is the share of the probe's true positives on held-out words where the main
latent stays silent and another active latent carries the probe direction instead: the active
latent contributing most along the probe (activation x decoder . probe) has a decoder cosine with
the probe of at least `min_cosine` and gives at least `min_share` of the positive contributions of
all active latents. SAEBench's cosine of 0.025 is below the noise of a random direction in a
576-wide residual (standard deviation 1/sqrt(576) = 0.042), so the default is three such standard
deviations, 3/sqrt(d_in). A second latent that splits the letter with the main one counts as
absorbing here, so the figure is an upper bound on absorption proper.

The words are single vocabulary tokens read at the end of a few-shot spelling prompt
(`workbench/evaluation/labelled.py`), so the letter is what the context is about, as in SAEBench's
prompts. On plain text frequent words (" and", " the") would stand for their letters, and the
letter is hardly readable at a middle layer: probe F1 0.67 on SmolLM2's layer 12 over the distinct
words of the evaluation set (0.71 after the prompt).

Words are tokens that are a space followed by two or more ASCII letters (" house", not "house" or
" 1990"), or, for a tokenizer whose tokens never start with a space (a word-level one, like the
tiny test model's), any token of two or more letters; the label is the first letter, lower-cased.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

if TYPE_CHECKING:
    from saes.base import Dictionary

WORD = re.compile(r"^ [A-Za-z]{2,}$")
BARE_WORD = re.compile(r"^[A-Za-z]{2,}$")


class LetterResult(NamedTuple):
    letter: str
    main_latent: int
    probe_f1: float
    """F1 of the probe on held-out words."""
    true_positives: int
    main_silent: int
    """True positives on which the main latent does not fire."""
    absorbed: int
    """Of those, the ones where another latent carries the probe direction."""

    @property
    def rate(self) -> float:
        return self.absorbed / self.true_positives if self.true_positives else 0.0


class AbsorptionResult(NamedTuple):
    rate: float
    """Mean over letters of absorbed / true positives."""
    silent_rate: float
    """Mean over letters of main-latent-silent / true positives (absorbed or simply missed)."""
    letters: list[LetterResult]


def first_letters(token_strings: Sequence[str]) -> np.ndarray:
    """Lower-cased first letter of each word token, '' for tokens that are not words."""
    spaced = any(s.startswith(" ") for s in token_strings)
    word = WORD if spaced else BARE_WORD
    return np.asarray([s.strip()[0].lower() if word.match(s) else "" for s in token_strings])


def _probe_direction(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[LogisticRegression, np.ndarray]:
    """A logistic probe on x scaled by one constant (so its weights are a direction in x's units)."""
    probe = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed).fit(x, y)
    w = probe.coef_[0]
    return probe, w / np.linalg.norm(w)


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = float((pred & y).sum())
    return 2 * tp / max(float(pred.sum() + y.sum()), 1.0)


@torch.no_grad()
def absorption(acts: torch.Tensor, letters: np.ndarray, dictionary: Dictionary, seed: int = 0,
               test_fraction: float = 0.3, min_cosine: float | None = None, min_share: float = 0.5,
               min_positives: int = 20) -> AbsorptionResult:
    """Absorption of `dictionary` on activations `acts` `[n, d_in]` whose tokens start with `letters`
    (see `first_letters`; '' rows are ignored). Letters with fewer than `min_positives` training words
    are skipped; ValueError if none is left. `min_cosine` None is 3/sqrt(d_in)."""
    min_cosine = 3 / acts.shape[-1] ** 0.5 if min_cosine is None else min_cosine
    words = np.flatnonzero(letters != "")
    rng = np.random.default_rng(seed)
    words = words[rng.permutation(len(words))]
    cut = int(len(words) * (1 - test_fraction))
    train, test = words[:cut], words[cut:]
    x = acts.float()
    scale = float(x[words].norm(dim=-1).mean()) or 1.0
    x_np = (x / scale).numpy()
    code = dictionary.encode(x[test])
    decoder = torch.nn.functional.normalize(dictionary.decoder_directions().float(), dim=-1)
    train_means = _latent_means(dictionary, x[train], letters[train])
    results = []
    for letter in sorted(set(letters[train]) - {""}):
        y_train, y_test = letters[train] == letter, letters[test] == letter
        if y_train.sum() < min_positives or not y_test.any():
            continue
        probe, direction = _probe_direction(x_np[train], y_train, seed)
        predicted = probe.predict(x_np[test]).astype(bool)
        main = int(torch.argmax(train_means[letter] - train_means[f"not {letter}"]))
        results.append(_letter_result(letter, main, predicted, y_test, code, decoder,
                                      torch.from_numpy(direction).float(), min_cosine, min_share))
    if not results:
        raise ValueError(f"no letter has {min_positives} training words among {len(words)} word tokens")
    return AbsorptionResult(float(np.mean([r.rate for r in results])),
                            float(np.mean([r.main_silent / max(r.true_positives, 1) for r in results])), results)


def _latent_means(dictionary: Dictionary, x: torch.Tensor, letters: np.ndarray) -> dict[str, torch.Tensor]:
    """Mean latent activation over the words of each letter and over all other words."""
    dense = dictionary.encode(x).dense()
    total = dense.sum(0)
    out = {}
    for letter in sorted(set(letters) - {""}):
        mask = torch.from_numpy(letters == letter)
        inside = dense[mask].sum(0)
        out[letter] = inside / int(mask.sum())
        out[f"not {letter}"] = (total - inside) / max(len(letters) - int(mask.sum()), 1)
    return out


def _letter_result(letter: str, main: int, predicted: np.ndarray, truth: np.ndarray, code, decoder: torch.Tensor,
                   direction: torch.Tensor, min_cosine: float, min_share: float) -> LetterResult:
    tp = np.flatnonzero(predicted & truth)
    idx, val = code.indices[tp], code.values[tp]
    main_fires = ((idx == main) & (val > 0)).any(-1)
    cosines = decoder @ direction                             # [d_dict]
    contribution = torch.where((val > 0) & (idx != main), val * cosines[idx], torch.full_like(val, -torch.inf))
    best = contribution.argmax(-1, keepdim=True)
    absorber_cos = cosines[idx.gather(-1, best)].squeeze(-1)
    top = contribution.gather(-1, best).squeeze(-1)
    positive_total = contribution.clamp(min=0).sum(-1)
    absorbed = ~main_fires & (top > 0) & (absorber_cos >= min_cosine) & (top >= min_share * positive_total)
    return LetterResult(letter, main, _f1(predicted, truth), len(tp), int((~main_fires).sum()), int(absorbed.sum()))
