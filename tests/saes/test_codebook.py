"""The codebook bottleneck (saes/codebook.py) by hand: gradients, encoding = what the model runs with,
decoding along the code vectors, forced codes, dead-code replacement, saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import saes
from saes.codebook import Codebook, CodebookConfig, Overrides


def codebook(d_in: int = 8, codes: int = 6, groups: int = 2, k: int = 2, **extra) -> Codebook:
    return Codebook(CodebookConfig(d_in=d_in, d_sae=groups * codes, groups=groups, k=k, hook_point="h", **extra))


def test_straight_through_and_reconstruction_gradients_by_hand():
    cb = codebook(d_in=4, codes=3, groups=1, k=1)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    out = cb.bottleneck(x)
    ids = out.ids[:, 0, 0]
    u = F.layer_norm(x, (4,))                        # ln weight 1, bias 0 at construction
    g = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    (out.output * g).sum().backward()
    torch.testing.assert_close(cb.ln_bias.grad[0], g.sum(0))   # d output / d u = identity (straight through)
    for j in range(3):                                # task gradient of code j: the grads of the tokens that chose it
        torch.testing.assert_close(cb.codebook.grad[0, j], g[ids == j].sum(0))
    cb.zero_grad()
    cb.bottleneck(x).loss.backward()                  # mean_t ||c_{id_t} - u_t||^2, gradient to the codes only
    assert cb.ln_bias.grad is None or torch.count_nonzero(cb.ln_bias.grad) == 0
    for j in range(3):
        expected = (2 * (cb.codebook[0, j] - u[ids == j]) / 5).sum(0)
        torch.testing.assert_close(cb.codebook.grad[0, j], expected.detach())


def test_the_commitment_term_pulls_the_input_towards_its_code():
    cb = codebook(d_in=4, codes=3, groups=1, k=1, commitment=0.25)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    out = cb.bottleneck(x)
    out.loss.backward()
    u = F.layer_norm(x, (4,))
    chosen = cb.codebook[0, out.ids[:, 0, 0]].detach()
    torch.testing.assert_close(cb.ln_bias.grad[0], (0.25 * 2 * (u - chosen) / 5).sum(0))


def test_the_chosen_codes_are_the_most_similar_and_decode_to_what_the_model_runs_with():
    cb = codebook()
    x = torch.randn(3, 5, 8)
    code = cb.encode(x)
    scores = cb.similarities(cb.normalise(x)).detach()
    expected = scores.topk(2, dim=-1).indices + torch.tensor([0, 6]).unsqueeze(-1)
    assert torch.equal(code.indices, expected.flatten(-2)) and bool((code.values == 1).all())
    torch.testing.assert_close(cb.decode(code), cb.bottleneck(x).output.detach())
    by_hand = torch.cat([cb.codebook[g, expected[..., g, :] - 6 * g].mean(-2) for g in range(2)], -1)
    torch.testing.assert_close(cb.decode(code), by_hand.detach())


def test_inner_product_similarity_prefers_long_codes_where_cosine_does_not():
    cos, inner = codebook(d_in=2, codes=2, groups=1, k=1), codebook(d_in=2, codes=2, groups=1, k=1,
                                                                    similarity="inner_product")
    for cb in (cos, inner):
        with torch.no_grad():
            cb.codebook.copy_(torch.tensor([[[1.0, -1.0], [10.0, 0.0]]]))
    x = torch.tensor([[3.0, -1.0]])                   # u = (1, -1): code 0 is parallel, code 1 long
    assert cos.encode(x).indices.item() == 0 and inner.encode(x).indices.item() == 1


def test_forced_codes_take_the_first_slots_without_repeats_and_only_at_chosen_positions():
    own = torch.tensor([[[[0, 1, 2]], [[3, 4, 5]], [[1, 2, 3]]]])   # [batch 1, seq 3, groups 1, k 3]
    patched = Overrides({0: torch.tensor([2, 7])}, positions=None).apply(own)
    assert patched[0, :, 0].tolist() == [[2, 7, 0], [2, 7, 3], [2, 7, 1]]
    only_middle = Overrides({0: torch.tensor([9])}, positions=torch.tensor([1, 40])).apply(own)
    assert only_middle[0, :, 0].tolist() == [[0, 1, 2], [9, 3, 4], [1, 2, 3]]


def test_unused_codes_are_replaced_by_recent_inputs_after_the_window():
    cb = codebook(d_in=4, codes=5, groups=1, k=1, replace_after=2, replace_noise=0.0).train()
    with torch.no_grad():
        cb.codebook[0, 1:] = -100 * cb.codebook[0, 0]       # only code 0 can win for these inputs
        cb.codebook[0, 0] = F.layer_norm(torch.ones(4) + torch.arange(4.0), (4,))
    before = cb.codebook.detach().clone()
    x = torch.arange(4.0).repeat(6, 1) + torch.randn(6, 4) * 0.01
    generator = torch.Generator().manual_seed(0)
    cb.bottleneck(x)
    assert cb.after_step(generator) == 0              # window not over
    cb.bottleneck(x)
    assert cb.after_step(generator) == 4              # codes 1-4 never chosen
    assert torch.equal(cb.codebook[0, 0], before[0, 0])
    recent = cb.normalise(x).detach()[:, 0]
    for j in range(1, 5):
        assert (recent - cb.codebook[0, j]).abs().sum(-1).min() < 1e-6


def test_the_layer_norm_starts_at_the_input_scale():
    cb = codebook(d_in=8, codes=4, groups=2, k=1)
    x = 50 * torch.randn(400, 8) + 3
    cb.initialize_from_sample(x, torch.Generator().manual_seed(0))
    assert 40 < cb.ln_weight.mean() < 60 and (cb.normalise(x).std() / x.std() - 1).abs() < 0.1


@pytest.mark.parametrize(("fields", "message"), [
    ({"k": 7}, "k \\(7\\) must be between 1 and the codebook's size \\(6 codes"),
    ({"groups": 3}, "groups \\(3\\) must divide"),
    ({"similarity": "euclid"}, "similarity must be one of"),
    ({"commitment": -1.0}, "must be >= 0"),
])
def test_bad_configs_are_refused(fields, message):
    base = {"d_in": 8, "d_sae": 12, "groups": 2} | fields
    with pytest.raises(ValueError, match=message):
        CodebookConfig(**base)


def test_save_and_load_keep_the_codes(tmp_path):
    cb = codebook()
    cb.initialize_from_sample(torch.randn(100, 8), torch.Generator().manual_seed(0))
    cb.save(tmp_path / "cb")
    loaded = saes.load(tmp_path / "cb", expected_d_in=8)
    x = torch.randn(20, 8)
    assert isinstance(loaded, Codebook) and loaded.cfg == cb.cfg
    assert torch.equal(loaded.encode(x).indices, cb.encode(x).indices)
    direction = cb.decoder_directions([7])[0]
    assert torch.equal(direction[:4], torch.zeros(4)) and torch.allclose(direction[4:], cb.codebook[1, 1] / 2)
