"""Specificity measures on explanations whose verdict is known."""

from __future__ import annotations

import math

import pandas as pd
from interp_helpers import DICT_ID

from pipelines.autointerp import specificity
from pipelines.autointerp.examples import Example, rows_to_examples
from workbench import queries


def test_generic_phrasings_are_caught_and_specific_ones_pass():
    generic = ["The marked tokens are nouns or proper nouns.", "various words in different contexts", "Nouns",
               "This feature fires on text", "highlighted words"]
    specific = ['the word "said"', "four-digit years", "football match results", "closing parentheses",
                "names of months", "common cold symptoms"]
    assert [specificity.is_generic(t) for t in generic] == [True] * 5
    assert [specificity.is_generic(t) for t in specific] == [False] * 6
    assert specificity.generic_fraction(generic[:2] + specific[:2]) == 0.5


def test_shared_token_and_whether_it_is_named():
    said = [Example(("He", " said", " it"), (0, 2.0, 0.5), "top"), Example(("she", " said"), (0.1, 1.0), "top"),
            Example(("I", " told", " him"), (0, 3.0, 0), "top")]
    assert specificity.shared_token(said) == "said"  # 2 of 3 peak on it
    assert specificity.shared_token(said[1:]) is None  # 1 of 2: not most
    assert specificity.names_token('the word "said"', "said") and not specificity.names_token("sayings", "said")
    assert specificity.names_token("closing parentheses )", ")") and not specificity.names_token("commas", ")")


def test_report_counts_what_it_says():
    explanations = pd.DataFrame({"feature": [1, 2, 3], "text": ['the word "said"', "rivers", "the marked tokens"]})
    top = {1: [Example(("a", " said"), (0, 1.0), "top")], 2: [Example(("a", " the"), (0, 1.0), "top")]}
    out = specificity.report(explanations, top)
    assert out["generic_fraction"] == 1 / 3 and out["shared_token_features"] == 2
    assert out["shared_token_named"] == 0.5 and -1 <= out["mean_similarity"] <= 1
    identical = specificity.mean_similarity(["rivers in Africa", "rivers in Africa"])
    assert math.isclose(identical, 1.0, abs_tol=1e-5)


def test_shared_token_features_read_the_store(store):
    """On a real feature pass: each returned feature's stored top examples peak on its token, and the
    selection is the seeded order's first n of them (a larger n extends a smaller one)."""
    found = specificity.shared_token_features(store, DICT_ID, 3)
    assert 1 <= len(found) <= 3
    for feature, token in found.items():
        top = [e for e in rows_to_examples(queries.feature_examples(store, DICT_ID, feature)) if e.kind == "top"]
        assert specificity.shared_token(top) == token
    more = specificity.shared_token_features(store, DICT_ID, 6)
    assert list(more)[: len(found)] == list(found)
