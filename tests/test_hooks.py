"""Interventions on a real (tiny, random) HookedTransformer."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saes import create
from workbench.hooks import ablate, add_vector, clamp, clamp_active, ordinary_positions, record, splice, steer

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return HookedTransformer(HookedTransformerConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=500, n_ctx=64,
        act_fn="gelu", normalization_type="LN", seed=0))


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def sae(model, tokens):
    sae = create("relu", d_in=64, d_sae=256, hook_point=HOOK)
    _, cache = model.run_with_cache(tokens)
    with torch.no_grad():  # centre on the data so a reasonable number of latents fire
        sae.b_dec.copy_(cache[HOOK].mean((0, 1)))
        sae.b_enc.fill_(-0.5)
    return sae


def n_hooks(model: HookedTransformer) -> int:
    return sum(len(hp.fwd_hooks) for hp in model.hook_dict.values())


def active_feature(sae, model, tokens) -> int:
    with record(model, [HOOK]) as acts:
        model(tokens)
    dense = sae.encode_dense(acts[HOOK])
    assert (dense > 0).any()
    return int((dense > 0).sum((0, 1)).argmax())


@torch.no_grad()
def test_hooks_are_removed_after_the_block_even_on_error(model, sae, tokens):
    clean = model(tokens)
    for context in (splice(model, sae), steer(model, sae, {3: 5.0}), clamp(model, sae, {3: 1.0}),
                    ablate(model, sae, [3]), record(model, [HOOK])):
        with pytest.raises(RuntimeError, match="boom"), context:
            assert n_hooks(model) > 0
            raise RuntimeError("boom")
        assert n_hooks(model) == 0
    assert torch.equal(model(tokens), clean)


@torch.no_grad()
def test_hooks_added_by_the_caller_survive(model, sae, tokens):
    calls = []
    model.add_hook(HOOK, lambda act, hook: calls.append(1))
    try:
        with splice(model, sae):
            model(tokens)
        model(tokens)
        assert len(calls) == 2
    finally:
        model.reset_hooks()


@torch.no_grad()
def test_steer_changes_logits_by_the_decoder_direction(model, sae, tokens):
    clean = model(tokens)
    with record(model, [HOOK]) as before:
        model(tokens)
    with steer(model, sae, {7: 8.0}), record(model, [HOOK]) as after:
        steered = model(tokens)
    assert not torch.allclose(steered, clean, atol=1e-3)
    assert torch.allclose(after[HOOK] - before[HOOK], (8.0 * sae.W_dec[7]).expand_as(before[HOOK]), atol=1e-5)


@torch.no_grad()
def test_steer_only_at_given_positions(model, sae, tokens):
    with record(model, [HOOK]) as before:
        model(tokens)
    with steer(model, sae, {7: 8.0}, positions=[2]), record(model, [HOOK]) as after:
        model(tokens)
    delta = (after[HOOK] - before[HOOK]).norm(dim=-1)  # [batch, pos]
    assert (delta[:, 2] > 1).all() and delta[:, :2].abs().max() < 1e-6


@torch.no_grad()
def test_clamp_to_current_value_is_a_no_op(model, sae):
    one = torch.tensor([[42]])  # one token, so each feature has a single current value
    clean = model(one)
    with record(model, [HOOK]) as acts:
        model(one)
    dense = sae.encode_dense(acts[HOOK])[0, 0]
    on, off = int(dense.argmax()), int((dense == 0).nonzero()[0])
    assert dense[on] > 0
    with clamp(model, sae, {on: float(dense[on]), off: 0.0}):
        assert torch.allclose(model(one), clean, atol=1e-5)
    with clamp(model, sae, {on: float(dense[on]) + 1.0}):
        assert not torch.allclose(model(one), clean, atol=1e-3)


@torch.no_grad()
def test_clamp_sets_only_that_feature(model, sae, tokens):
    feature = active_feature(sae, model, tokens)
    with clamp(model, sae, {feature: 4.0}), record(model, [HOOK]) as acts:
        model(tokens)
    with record(model, [HOOK]) as clean_acts:
        model(tokens)
    clean = sae.encode_dense(clean_acts[HOOK])[..., feature]
    # decode(code with feature := 4) + error differs from the clean activation only along the
    # feature's decoder direction, by (4 - its clean activation)
    expected = (4.0 - clean)[..., None] * sae.W_dec[feature]
    assert torch.allclose(acts[HOOK] - clean_acts[HOOK], expected, atol=1e-5)
    assert (clean != 4.0).all()


@torch.no_grad()
def test_ablate_is_clamp_to_zero(model, sae, tokens):
    feature = active_feature(sae, model, tokens)
    with ablate(model, sae, [feature]):
        ablated = model(tokens)
    with clamp(model, sae, {feature: 0.0}):
        clamped = model(tokens)
    assert torch.equal(ablated, clamped)


@torch.no_grad()
def test_splice_with_error_term_reproduces_clean_logits(model, sae, tokens):
    clean = model(tokens)
    with splice(model, sae, keep_error=True):
        assert torch.allclose(model(tokens), clean, atol=1e-4)
    with splice(model, sae):
        assert not torch.allclose(model(tokens), clean, atol=1e-2)


def test_steer_works_with_generate(model, sae):
    prompt = torch.tensor([[1, 2, 3, 4]])
    plain = model.generate(prompt, max_new_tokens=4, do_sample=False, stop_at_eos=False, verbose=False)
    with steer(model, sae, {7: 50.0}):
        steered = model.generate(prompt, max_new_tokens=4, do_sample=False, stop_at_eos=False, verbose=False)
    assert n_hooks(model) == 0
    assert not torch.equal(plain, steered)


def test_unknown_hook_point_and_wrong_width(model, sae):
    with pytest.raises(ValueError, match=r"no hook point 'blocks\.9\.hook_resid_post'"), \
            record(model, ["blocks.9.hook_resid_post"]):
        pass
    narrow = create("relu", d_in=16, d_sae=32, hook_point=HOOK)
    with pytest.raises(ValueError, match=r"have width 64, but this dictionary has d_in=16"), splice(model, narrow):
        model(torch.tensor([[1, 2]]))
    assert n_hooks(model) == 0


def test_splice_can_spare_position_zero(model, sae, tokens):
    with record(model, [HOOK]) as seen_clean:
        model(tokens)
    clean = seen_clean[HOOK].clone()
    with splice(model, sae, skip_first=True), record(model, [HOOK]) as seen:
        model(tokens)
    torch.testing.assert_close(seen[HOOK][:, 0], clean[:, 0])
    x_hat, _ = sae(clean[:, 1:])
    torch.testing.assert_close(seen[HOOK][:, 1:], x_hat)


def test_ordinary_positions_by_hand():
    x = torch.zeros(1, 4, 2)
    x[0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 40.0])      # median norm 2 (lower middle): 40 > 10 x 2
    assert ordinary_positions(x, 10.0).tolist() == [[True, True, True, False]]
    assert ordinary_positions(x, 0.0).all()
    assert ordinary_positions(x[:, 3:], 10.0).all()        # one cached step is its own median


@torch.no_grad()
def test_clamp_active_sets_the_feature_only_where_it_fires(model, sae, tokens):
    with record(model, [HOOK]) as clean_acts:
        model(tokens)
    clean = sae.encode_dense(clean_acts[HOOK])
    fires = clean > 0
    feature = int(((fires.sum((0, 1)) > 0) & (fires.sum((0, 1)) < fires[..., 0].numel())).nonzero()[0])
    with clamp_active(model, sae, {feature: -3.0}), record(model, [HOOK]) as acts:
        model(tokens)
    f = clean[..., feature]
    expected = torch.where(f > 0, -3.0 - f, 0.0)[..., None] * sae.W_dec[feature]
    torch.testing.assert_close(acts[HOOK] - clean_acts[HOOK], expected, atol=1e-5, rtol=0)
    assert torch.equal(acts[HOOK][f == 0], clean_acts[HOOK][f == 0])


@torch.no_grad()
def test_clamp_active_and_add_vector_spare_positions_of_outsized_norm(model, sae, tokens):
    with record(model, [HOOK]) as clean_acts:
        model(tokens)
    x = clean_acts[HOOK]
    ratio = 1.0 + 1e-4                          # about half the positions sit above the call's median norm
    spared = ~ordinary_positions(x, ratio)
    assert 0 < int(spared.sum()) < spared.numel()
    every = list(range(sae.d_sae))
    vector = torch.ones(64)
    for intervention in (clamp_active(model, sae, dict.fromkeys(every, 0.0), ratio),
                         add_vector(model, sae, vector, ratio)):
        with intervention, record(model, [HOOK]) as acts:
            model(tokens)
        assert torch.equal(acts[HOOK][spared], x[spared])
        assert (acts[HOOK][~spared] != x[~spared]).any(-1).all()
    with add_vector(model, sae, vector), record(model, [HOOK]) as acts:
        model(tokens)
    torch.testing.assert_close(acts[HOOK] - x, vector.expand_as(x), atol=1e-5, rtol=0)
