"""The evaluation suite: each metric on a case whose answer is known by construction, then
`workbench evaluate` end to end on the tiny model (rows stored, reruns skipped, bad input refused)."""

import math

import numpy as np
import pytest
import torch

import saes
from pipelines.evaluate import EvaluateConfig
from pipelines.evaluate import run as evaluate_run
from pipelines.train import TrainDictionaryConfig
from pipelines.train import run as train_run
from saes.fitting import FitSource, fit
from saes.training import TrainConfig
from workbench.evaluation import absorption, labelled, probing, stability, synthetic
from workbench.store import Store

# -- sparse probing -------------------------------------------------------------------------------


def _separable(n: int = 200, d: int = 30, informative: int = 3, seed: int = 0):
    """Labels decided by the sign of column `informative`; every other column is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.arange(n) % 2 == 0
    x[:, informative] = np.where(y, 5.0, -5.0) + rng.normal(scale=0.1, size=n)
    return x, y


def test_top_k_by_mean_difference_picks_the_informative_column():
    x, y = _separable()
    assert probing.top_k_by_mean_difference(x, y, 1).tolist() == [3]
    assert probing.top_k_by_mean_difference(np.array([[0.0, 1, 5], [0, 3, 1]]), np.array([True, False]), 2).tolist() \
        == [2, 1]   # |5 - 1| = 4 > |1 - 3| = 2 > 0


def test_sparse_probing_on_separable_data_is_exact_and_noise_is_chance():
    x, y = _separable()
    task = probing.Task("toy", x[:150], y[:150], x[150:], y[150:])
    assert probing.sparse_probing(task, [1, 5]) == {1: 1.0, 5: 1.0}
    noise = probing.Task("noise", np.delete(x, 3, 1)[:150], y[:150], np.delete(x, 3, 1)[150:], y[150:])
    assert abs(probing.probe_accuracy(noise.restricted(np.array([0]))) - 0.5) < 0.2


def test_one_vs_rest_splits_are_balanced_and_disjoint():
    labels = ["a"] * 10 + ["b"] * 6 + ["c"] * 4
    splits = probing.one_vs_rest_splits(labels, per_class=8, test_fraction=0.25, seed=0)
    assert [s[0] for s in splits] == ["a", "b", "c"]
    for c, train, ytr, test, yte in splits:
        n = min(8, labels.count(c), 20 - labels.count(c))
        assert len(train) + len(test) == 2 * n and not set(train) & set(test)
        assert ytr.sum() == len(ytr) / 2 and yte.sum() == len(yte) / 2
        assert all((np.array(labels)[train] == c) == ytr)


def test_probing_refuses_one_class_and_k_beyond_the_features():
    with pytest.raises(ValueError, match="1 class"):
        probing.one_vs_rest_splits(["pos"] * 5, 5, 0.2, 0)
    with pytest.raises(ValueError, match="k=4 is larger than the 3 features"):
        probing.top_k_by_mean_difference(np.zeros((4, 3)), np.array([True, False] * 2), 4)


def test_mean_per_document():
    values = torch.tensor([[1.0, 2], [3, 4], [10, 10]])
    out = labelled.mean_per_document(values, torch.tensor([0, 0, 2]), 3)
    assert out.tolist() == [[2.0, 3.0], [0.0, 0.0], [10.0, 10.0]]


# -- absorption -----------------------------------------------------------------------------------

def _absorbing_dictionary() -> saes.Dictionary:
    """d_in 4: latent 0 reads 'starts with a' (e0) but not on 'apple'-like tokens (which add e1),
    latent 1 fires only on those and writes along e0 + e1 (it has absorbed the letter there),
    latent 2 reads 'starts with b' (e2)."""
    sae = saes.create("relu", d_in=4, d_sae=3, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, -2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]).T)
        sae.b_enc.copy_(torch.tensor([0.0, -0.5, 0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0, 0, 0], [1 / math.sqrt(2), 1 / math.sqrt(2), 0, 0], [0, 0, 1, 0]]))
        sae.b_dec.zero_()
    return sae


def _letter_tokens():
    """300 'a' words, every fourth one 'apple'-like (e0 + e1); 300 'b' words (e2); nothing on e3."""
    a = torch.tensor([3.0, 0, 0, 0]).repeat(300, 1)
    a[::4, 1] = 3.0
    b = torch.tensor([0.0, 0, 3, 0]).repeat(300, 1)
    return torch.cat([a, b]), np.array(["a"] * 300 + ["b"] * 300)


def test_absorption_on_a_constructed_dictionary_finds_the_absorbed_quarter():
    x, letters = _letter_tokens()
    result = absorption.absorption(x, letters, _absorbing_dictionary(), seed=0, min_cosine=0.1)
    by_letter = {r.letter: r for r in result.letters}
    a, b = by_letter["a"], by_letter["b"]
    assert a.main_latent == 0 and b.main_latent == 2
    assert a.probe_f1 == 1.0 and b.probe_f1 == 1.0
    test_rows = np.random.default_rng(0).permutation(600)[420:]
    apple_like = sum(1 for r in test_rows if r < 300 and r % 4 == 0)
    assert a.main_silent == a.absorbed == apple_like              # exactly the apple-like test words
    assert b.absorbed == b.main_silent == 0
    assert result.rate == pytest.approx((apple_like / a.true_positives + 0) / 2)
    assert 0.15 < a.rate < 0.35                                    # about a quarter


def test_a_silent_main_latent_without_an_absorber_is_not_absorption():
    sae = _absorbing_dictionary()
    with torch.no_grad():
        sae.W_dec[1] = torch.tensor([0.0, 0, 0, 1])                 # latent 1 writes off the probe (e3)
    result = absorption.absorption(*_letter_tokens(), sae, seed=0, min_cosine=0.1)
    a = next(r for r in result.letters if r.letter == "a")
    assert a.main_silent > 0 and a.absorbed == 0


def test_first_letters_reads_words_only():
    assert absorption.first_letters([" House", " 1990", "ing", " a", " xy"]).tolist() == ["h", "", "", "", "x"]
    assert absorption.first_letters(["House", "of", "7"]).tolist() == ["h", "o", ""]   # word-level tokenizer


# -- stability ------------------------------------------------------------------------------------

def test_matched_fraction_hand_computed():
    a = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    b = torch.tensor([[2.0, 0, 0], [0, 0.8, 0.6], [0, 0, -1]])
    # best cosines: 1.0, 0.8, 0.6, 1/sqrt(2) = 0.707 -> one of four at 0.9, two at 0.75
    assert stability.matched_fraction(a, b, 0.9) == 0.25
    assert stability.matched_fraction(a, b, 0.75) == 0.5
    with pytest.raises(ValueError, match="widths 3 and 2"):
        stability.matched_fraction(a, b[:, :2])
    # rowwise: cos(e0, 2 e0) = 1, cos(e1, 0.8 e1 + 0.6 e2) = 0.8, cos(e2, -e2) = -1 -> median 0.8
    assert stability.median_rowwise_cosine(a[:3], b) == pytest.approx(0.8)


# -- ground truth ---------------------------------------------------------------------------------

def test_recovery_hand_computed():
    truth = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    decoder = torch.tensor([[0.0, 0.6, 0.8], [3.0, 0, 0]])   # best cosines: 1.0 and 0.6
    assert synthetic.recovery(truth, decoder) == (0.5, pytest.approx(0.8))


def test_an_untrained_dictionary_recovers_nothing_and_a_fitted_one_most():
    spec = synthetic.SyntheticSpec(d=16, n_features=24, mean_active=1.5, rows=150_000)
    truth = synthetic.truth(spec)
    fresh = saes.create("topk", d_in=16, d_sae=48, k=2, seed=spec.seed)   # same seed as the truth
    assert synthetic.recovery(truth.directions, fresh.decoder_directions()).recovered < 0.1
    trainer = TrainConfig(lr=1e-2, warmup_steps=20, dead_after_tokens=None, total_tokens=spec.rows, progress_bar=False)
    fit(fresh, FitSource(rows=lambda: synthetic.batches(spec, 256), batches=lambda: synthetic.batches(spec, 256),
                         trainer=trainer, progress=False))
    assert synthetic.recovery(truth.directions, fresh.decoder_directions()).recovered > 0.8
    rows = next(synthetic.batches(spec, 5000))
    assert abs(float((rows.norm(dim=-1) > 0).float().mean()) - (1 - float((1 - truth.probability).prod()))) < 0.02


# -- the pipeline on the tiny model ------------------------------------------------------------------

TRAIN = dict(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", context=64,
             tokens=6_000, batch_tokens=512, buffer_tokens=2048, eval_tokens=1000, ce_sequences=4,
             sae={"k": 8}, expansion=4)
EVAL = dict(corpus="wiki-sample", context=64, eval_tokens=3000, ce_sequences=4, probing_sets=["wiki-sample"],
            probe_docs_per_class=12, probe_context=32, ks=[1, 2, 5], synthetic_rows=20_000, progress=False)


def _table(store: Store) -> dict:
    return {t: len(store.query(f"SELECT * FROM {t}")) for t in ("runs", "evaluations")}


@pytest.fixture
def two_seeds(data_dir):
    store = Store(data_dir / "w.duckdb")
    ids = [train_run(TrainDictionaryConfig(**TRAIN, seed=s), store, progress=False) for s in (0, 1)]
    return store, ids


def test_evaluate_fills_every_group_and_a_rerun_skips(two_seeds, capsys):
    store, (first, second) = two_seeds
    evaluate_run(EvaluateConfig(dict_id=first, **EVAL), store)
    rows = store.query("SELECT metric, value FROM evaluations WHERE dict_id = ?", [first])
    values = dict(zip(rows["metric"], rows["value"]))
    assert 0 < values["core/fvu"] < 1 and values["core/l0"] <= 8 and 0 <= values["core/dense_frac"] <= 1
    assert 0 < values["core/ce_loss_recovered"] <= 1.05
    for key in ("k=1", "k=5", "raw_k=1", "raw_all"):
        assert 0.3 <= values[f"probing/mean/{key}"] <= 1
    assert 0 <= values["absorption/rate"] <= values["absorption/main_silent_rate"] <= 1
    assert 0 <= values["stability/matched@0.9"] <= 1 and -1 <= values["stability/init_cosine"] < 1
    assert 0 <= values["ground_truth/recovered@0.9"] <= 1 and 0 < values["ground_truth/mmcs"] <= 1
    assert {m.split("/")[0] for m in values} == {"core", "probing", "absorption", "stability", "ground_truth",
                                                 "seconds"}
    assert "no evaluation set yet" in capsys.readouterr().out
    before = _table(store)
    evaluate_run(EvaluateConfig(dict_id=first, **EVAL), store)
    assert _table(store) == before and "already evaluated" in capsys.readouterr().out


def test_stability_of_a_dictionary_with_itself_and_its_other_seed(two_seeds):
    store, (first, second) = two_seeds
    evaluate_run(EvaluateConfig(all=True, groups=["stability"], **EVAL), store)
    rows = store.query("SELECT dict_id, value, details->>'partner' AS partner FROM evaluations "
                       "WHERE metric = 'stability/matched@0.9' ORDER BY dict_id")
    assert dict(zip(rows["dict_id"], rows["partner"])) == {first: second, second: first}
    sae = saes.load(store.query("SELECT path FROM dictionaries WHERE dict_id = ?", [first])["path"].item())
    assert stability.matched_fraction(sae.decoder_directions(), sae.decoder_directions()) == 1.0


@pytest.mark.parametrize("fields, message", [
    (dict(dict_id="nope"), "unknown dictionary 'nope'"),
    (dict(ks=[1, 300]), "k=300 is larger than dictionary"),
    (dict(probing_sets=["sharegpt-sample"]), "has no labelled text documents"),
    (dict(probing_sets=["no-such-corpus"]), "unknown corpus 'no-such-corpus'"),
])
def test_bad_input_is_refused_before_any_write(two_seeds, fields, message):
    store, (first, _) = two_seeds
    before = _table(store)
    with pytest.raises((ValueError, LookupError), match=message):
        evaluate_run(EvaluateConfig(**{**EVAL, "dict_id": first, **fields}), store)
    assert _table(store) == before
