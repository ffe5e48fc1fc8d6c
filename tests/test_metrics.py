"""Every metric against a value worked out by hand on a tiny example (numbers in comments)."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saes import create
from workbench import metrics

# Two tokens, two dims.
X = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
X_HAT = torch.tensor([[1.0, 1.0], [2.0, 4.0]])


def test_mse_is_mean_over_tokens_of_summed_squared_error():
    # errors [0, 1] and [1, 0]: per-token sums 1 and 1, mean 1 (mean over all 4 elements would be 0.5)
    assert metrics.mse(X, X_HAT).item() == pytest.approx(1.0)
    # leading dims are tokens: the same two tokens as [1, 2, 2] give the same value
    assert metrics.mse(X[None], X_HAT[None]).item() == pytest.approx(1.0)


def test_per_sequence_mse_weighs_sequences_equally():
    # Sequence 0 has one token with squared errors [4, 0]; sequence 1 has two tokens, [0, 0] and
    # [2, 0]. Per token, mean over H=2 dims: 2 | 0, 1. Per sequence: 2 and 0.5; Eq. 7: (2 + 0.5) / 2.
    x = torch.zeros(3, 2)
    x_hat = torch.tensor([[2.0, 0.0], [0.0, 0.0], [2.0 ** 0.5, 0.0]])
    seq = torch.tensor([0, 5, 5])
    assert metrics.per_sequence_mse(x, x_hat, seq).item() == pytest.approx(1.25)
    # A token-weighted mean would give (2 + 0 + 1) / 3 = 1; masking row 1 leaves (2 + 1) / 2.
    assert metrics.per_sequence_mse(x, x_hat, seq, torch.tensor([True, False, True])).item() == pytest.approx(1.5)
    # A sequence with no masked row is left out of N: only sequence 5's row 2 counts.
    assert metrics.per_sequence_mse(x, x_hat, seq, torch.tensor([False, False, True])).item() == pytest.approx(1.0)


def test_fvu_centres_on_the_batch_mean():
    # residual sum 2; mean [2, 3], centred x = [[-1, -1], [1, 1]] -> total 4; FVU = 0.5
    # (relative to zero the total would be 1 + 4 + 9 + 16 = 30 and FVU 1/15: SAELens #659)
    assert metrics.fvu(X, X_HAT).item() == pytest.approx(0.5)
    assert metrics.explained_variance(X, X_HAT).item() == pytest.approx(0.5)


def test_l0_counts_nonzeros_per_token():
    acts = torch.tensor([[0.0, 1.5, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    assert metrics.l0(acts).item() == pytest.approx(1.0)  # (2 + 0 + 1) / 3


def test_dead_and_dense_fractions():
    counts = torch.tensor([0, 3, 0, 5])
    assert metrics.dead_fraction(counts).item() == pytest.approx(0.5)  # latents 0 and 2
    # over 20 tokens the frequencies are 0, 0.15, 0, 0.25: one of four is above 0.2
    assert metrics.dense_fraction(counts, n_tokens=20, threshold=0.2).item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        metrics.dense_fraction(counts, n_tokens=0)


def test_next_token_ce_by_hand():
    tokens = torch.tensor([[0, 1, 1]])
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    # position 0 predicts token 1 with p = 1/2; position 1 predicts token 1 with p = 1/4;
    # the last position predicts nothing. CE = (ln 2 + ln 4) / 2 = 1.5 ln 2
    assert metrics.next_token_ce(logits, tokens).item() == pytest.approx(1.5 * math.log(2))


def test_kl_by_hand():
    p = torch.tensor([[0.0, 0.0]])            # (1/2, 1/2)
    q = torch.tensor([[math.log(3.0), 0.0]])  # (3/4, 1/4)
    # 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(4/3)
    assert metrics.kl_divergence(p, q).item() == pytest.approx(0.5 * math.log(4 / 3))
    assert metrics.kl_divergence(p, p).item() == pytest.approx(0.0)


def test_ce_loss_recovered_by_hand():
    assert metrics.ce_loss_recovered(ce_clean=2.0, ce_spliced=2.5, ce_zero_ablation=4.0) == pytest.approx(0.75)


@pytest.fixture(scope="module")
def tiny_model() -> HookedTransformer:
    return HookedTransformer(HookedTransformerConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=500, n_ctx=64,
        act_fn="gelu", normalization_type="LN", seed=0))


def test_splice_metrics_on_the_tiny_model(tiny_model):
    tokens = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    sae = create("topk", d_in=64, d_sae=256, k=8, hook_point="blocks.0.hook_resid_post")
    with torch.no_grad():
        sae.b_dec.copy_(tiny_model.run_with_cache(tokens)[1]["blocks.0.hook_resid_post"].mean((0, 1)))
    clean = metrics.next_token_ce(tiny_model(tokens), tokens).item()

    exact = metrics.splice_metrics(tiny_model, sae, tokens, keep_error=True)
    assert exact.ce_clean == pytest.approx(clean, abs=1e-6)
    assert exact.ce_spliced == pytest.approx(exact.ce_clean, abs=1e-4)
    assert exact.kl == pytest.approx(0.0, abs=1e-5)

    lossy = metrics.splice_metrics(tiny_model, sae, tokens)
    assert lossy.kl > 1e-3 and lossy.ce_spliced != pytest.approx(lossy.ce_clean, abs=1e-3)
    assert lossy.ce_zero_ablation == exact.ce_zero_ablation
    expected = (lossy.ce_zero_ablation - lossy.ce_spliced) / (lossy.ce_zero_ablation - lossy.ce_clean)
    assert lossy.ce_loss_recovered == pytest.approx(expected)


def test_splice_metrics_in_chunks_equal_one_pass(tiny_model, monkeypatch):
    tokens = torch.randint(0, 500, (5, 12), generator=torch.Generator().manual_seed(2))
    sae = create("topk", d_in=64, d_sae=128, k=4, hook_point="blocks.0.hook_resid_post")
    whole = metrics.splice_metrics(tiny_model, sae, tokens, skip_first=True)
    monkeypatch.setattr(metrics, "LOGITS_PER_CHUNK", 2 * 12 * tiny_model.cfg.d_vocab)   # chunks of 2, 2 and 1
    chunked = metrics.splice_metrics(tiny_model, sae, tokens, skip_first=True)
    for name in metrics.SpliceMetrics._fields:
        assert getattr(chunked, name) == pytest.approx(getattr(whole, name), rel=1e-5, abs=1e-7), name


def test_fire_counts_skip_padded_slots():
    indices = torch.tensor([[2, 0], [2, 3], [1, 1]])
    values = torch.tensor([[0.5, 0.0], [1.0, 2.0], [0.7, 0.0]])  # two padded slots (value 0)
    assert metrics.fire_counts(indices, values, d_sae=5).tolist() == [0, 1, 2, 1, 0]


def test_splice_metrics_skip_first_scores_positions_after_zero(tiny_model):
    tokens = torch.randint(0, 500, (2, 10), generator=torch.Generator().manual_seed(1))
    sae = create("topk", d_in=64, d_sae=128, k=4, hook_point="blocks.0.hook_resid_post")
    result = metrics.splice_metrics(tiny_model, sae, tokens, skip_first=True)
    with torch.no_grad():
        clean_logits = tiny_model(tokens)
    # by hand: the CE of predictions made at positions 1..T-2 (of tokens 2..T-1)
    logp = torch.log_softmax(clean_logits[:, 1:-1], dim=-1)
    expected = -logp.gather(-1, tokens[:, 2:, None]).mean()
    assert result.ce_clean == pytest.approx(float(expected), rel=1e-5)
    exact = metrics.splice_metrics(tiny_model, sae, tokens, keep_error=True, skip_first=True)
    assert exact.kl == pytest.approx(0.0, abs=1e-5)
