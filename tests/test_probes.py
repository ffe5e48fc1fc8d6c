"""Sparse-model probes on activations known by construction: a hook placed before the probe writes
the MLP's (or the router's) output, so every fraction, core set and load has a hand-computed value."""

from __future__ import annotations

import math

import pytest
import torch

from workbench import probes
from workbench.hooks import intervene
from workbench.models import load_model
from workbench.moe import MoEConfig, build_moe, train_moe


def run_with(model, hook_point: str, known: torch.Tensor, tokens: torch.Tensor, probe):
    """Forward `tokens` with `hook_point` overwritten by `known`, seen by `probe` (a probe context
    entered after the overwrite, so its hook runs second); returns what the probe yields."""
    with torch.no_grad(), intervene(model, hook_point, lambda acts: known.to(acts)), probe as measured:
        model(tokens, return_type=None)
    return measured


def known_mlp(batch: int, pos: int, d_mlp: int) -> torch.Tensor:
    """Position 0 huge (skipped); row 0: neurons 0..63 = -1 at every position; row 1: neurons 0..31
    = 3 at position 1, all zero at position 2."""
    acts = torch.zeros(batch, pos, d_mlp)
    acts[:, 0] = 100.0
    acts[0, 1:, :64] = -1.0
    acts[1, 1, :32] = 3.0
    return acts


def test_sparsity_fractions_by_hand(tiny):
    model, d_mlp = tiny.model, tiny.model.cfg.d_mlp
    assert d_mlp == 128
    tokens = torch.randint(4, 100, (2, 3))
    profile = run_with(model, probes.mlp_hook(0), known_mlp(2, 3, d_mlp), tokens,
                       probes.activation_sparsity(model, [0], thresholds=[0.5, 2.0]))
    table = profile.table().set_index("threshold")
    # 0.5: tokens below .5, .5, .75, 1 -> .6875; sequences below at every token: .5, .75 -> .625
    # 2.0: tokens 1, 1, .75, 1 -> .9375; sequences 1, .75 -> .875
    assert table.loc[0.5, "token_fraction"] == pytest.approx(0.6875)
    assert table.loc[0.5, "sentence_fraction"] == pytest.approx(0.625)
    assert table.loc[2.0, "token_fraction"] == pytest.approx(0.9375)
    assert table.loc[2.0, "sentence_fraction"] == pytest.approx(0.875)
    assert list(model.hook_dict[probes.mlp_hook(0)].fwd_hooks) == []   # the probe removed its hook


def test_core_sets_stability_and_topics_by_hand(tiny):
    model, d_mlp = tiny.model, tiny.model.cfg.d_mlp
    acts = torch.zeros(3, 9, d_mlp)
    acts[:, :, 100:] = 0.01 * torch.arange(1, 29)   # small, never core
    acts[0, 1:, :32] = 5.0                           # the same 32 neurons before and after the split
    acts[1, 1:5, :32] = 5.0                          # one set before position 5 ...
    acts[1, 5:, 32:64] = -6.0                        # ... a disjoint, larger one (magnitude counts) after
    acts[2, 1:, 32:64] = 2.0
    cores = run_with(model, probes.mlp_hook(1), acts, torch.randint(4, 100, (3, 9)),
                     probes.core_neurons(model, [1], token_fraction=0.25, split=5))
    first, second = cores.sentence_core(1, 0.25, "first"), cores.sentence_core(1, 0.25, "second")
    assert first[0].nonzero().flatten().tolist() == list(range(32))
    assert second[1].nonzero().flatten().tolist() == list(range(32, 64))
    assert probes.jaccard(first, second).tolist() == pytest.approx([1.0, 0.0, 1.0])
    whole = cores.sentence_core(1, 0.25)
    # row 1's two sets are token-core equally often; the larger magnitudes (32..63) win the tie
    assert whole[1].nonzero().flatten().tolist() == list(range(32, 64))
    same, different, _ = probes.topic_similarity(whole, ["a", "b", "a"])
    assert same == pytest.approx(0.0)             # rows 0 and 2: 0..31 against 32..63
    assert different == pytest.approx(0.5)        # row 1 against row 0: 0, against row 2: 1
    with pytest.raises(ValueError, match="two sequences of one label"):
        probes.topic_similarity(whole, ["a", "b", "c"])


def test_topic_p_value_small_for_topics_and_uniform_for_shuffled_ones():
    gen = torch.Generator().manual_seed(0)
    labels = [t for t in "abcd" for _ in range(10)]
    topic_neurons = torch.stack([torch.arange(200) // 50 == "abcd".index(t) for t in labels])   # 50 per topic
    noise = probes.random_rows(40, 200, 0.2, gen)
    same, different, p = probes.topic_similarity(topic_neurons | noise, labels, permutations=199)
    assert same > different and p == pytest.approx(1 / 200)
    null_p = [probes.topic_similarity(probes.random_rows(40, 200, 0.2, gen), labels, 99, seed)[2] for seed in range(40)]
    assert 0.35 <= sum(null_p) / len(null_p) <= 0.65 and sum(q <= 0.1 for q in null_p) <= 10


def test_top_fraction_equals_topk_and_keeps_its_size_on_ties():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 50, 300, generator=gen)
    expected = torch.zeros(scores.shape, dtype=torch.bool).scatter_(-1, scores.topk(60, dim=-1).indices, True)
    assert torch.equal(probes.top_fraction(scores, 0.2), expected)
    relu = torch.relu(torch.randn(6, 100, generator=gen) - 2.0)   # ~2 positive entries per row, the rest tie at 0
    mask = probes.top_fraction(relu, 0.1)
    assert mask.sum(-1).eq(10).all() and (mask | (relu == 0)).all() and mask[relu > 0].all()


def test_random_jaccard_matches_sampling():
    gen = torch.Generator().manual_seed(0)
    a, b = (probes.random_rows(2000, 1000, 0.3, gen) for _ in range(2))
    assert a.sum(1).eq(300).all()
    assert float(probes.jaccard(a, b).mean()) == pytest.approx(probes.random_jaccard(0.3), abs=0.005)


def test_keep_neurons_all_none_and_prefix(tiny):
    model, d_mlp = tiny.model, tiny.model.cfg.d_mlp
    tokens = torch.randint(4, 100, (2, 10))
    with torch.no_grad():
        clean = model(tokens)
        with probes.keep_neurons(model, {0: torch.ones(2, d_mlp, dtype=torch.bool)}, from_position=4):
            assert torch.equal(model(tokens), clean)
        with probes.keep_neurons(model, {0: torch.zeros(2, d_mlp, dtype=torch.bool)}, from_position=4):
            none = model(tokens)

        def zero_after(acts):
            acts = acts.clone()
            acts[:, 4:] = 0
            return acts

        with intervene(model, probes.mlp_hook(0), zero_after):
            assert torch.allclose(none, model(tokens))
    assert torch.equal(none[:, :4], clean[:, :4]) and not torch.allclose(none[:, 4:], clean[:, 4:])
    with pytest.raises(ValueError, match="does not match"), probes.keep_neurons(
            model, {0: torch.ones(3, d_mlp, dtype=torch.bool)}, 4):
        model(tokens)


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("moe") / "tiny-moe"
    return load_model(str(_saved(build_moe(MoEConfig(experts=4, top_k=2), balance_coefficient=0.01), folder)))


def test_moe_matches_its_transformers_twin(tiny_moe):
    tokens = torch.randint(4, 100, (2, 12))
    with torch.no_grad():
        assert torch.allclose(tiny_moe.model(tokens), tiny_moe.hf(tokens).logits, atol=1e-5)


def test_routing_by_hand(tiny_moe):
    model = tiny_moe.model
    fixed = torch.tensor([0.7, 0.2, 0.1, 0.0])
    tokens = torch.randint(4, 100, (2, 5))
    routing = run_with(model, "blocks.0.mlp.hook_expert_weights", fixed.expand(10, 4), tokens,
                       probes.expert_routing(model, layers=[0]))
    row = routing.table().iloc[0]
    assert row["load"] == pytest.approx([0.5, 0.5, 0.0, 0.0]) and row["max_load"] == pytest.approx(2.0)
    assert row["balance"] == pytest.approx(4 * (0.5 * 0.7 + 0.5 * 0.2))
    entropy = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert row["entropy"] == pytest.approx(entropy, rel=1e-5) and row["tokens"] == 10

    uniform = run_with(model, "blocks.1.mlp.hook_expert_weights", torch.full((10, 4), 0.25), tokens,
                       probes.expert_routing(model))
    table = uniform.table().set_index("layer")
    assert table.loc[1, "entropy_ratio"] == pytest.approx(1.0) and table.loc[1, "balance"] == pytest.approx(1.0)
    assert table.loc[0, "entropy_ratio"] < 1 and table.loc[0, "tokens"] == 10   # layer 0 kept its own router


def test_probes_refuse_the_wrong_model(tiny, tiny_moe):
    with pytest.raises(ValueError, match="has no experts"), probes.expert_routing(tiny.model):
        pass
    with pytest.raises(ValueError, match="no dense MLP"), probes.activation_sparsity(tiny_moe.model, [0], [0.1]):
        pass
    with pytest.raises(ValueError, match="out of range"), probes.activation_sparsity(tiny.model, [0], [0.1, -1]):
        pass
    with pytest.raises(ValueError, match=r"layers \[7\] out of range"), probes.core_neurons(tiny.model, [7], 0.2, 3):
        pass
    with pytest.raises(ValueError, match="token fraction 1.2 out of range"), \
            probes.core_neurons(tiny.model, [0], 1.2, 3):
        pass


def test_moe_training_lowers_loss_and_the_balancing_loss_balances(tmp_path):
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(4, 40, (64, 16), generator=gen)   # a 36-token vocabulary: learnable fast
    untrained = load_model(str(_saved(build_moe(MoEConfig(experts=4), 0.0), tmp_path / "untrained"))).model
    trained_path = train_moe(MoEConfig(experts=4, steps=40, batch=8), 0.0, blocks, tmp_path / "trained")
    trained = load_model(str(trained_path)).model
    with torch.no_grad():
        assert float(trained(blocks, return_type="loss")) < float(untrained(blocks, return_type="loss")) - 1.0
    routed = {}
    for coefficient in (0.0, 1.0):   # a heavy balancing loss spreads the routing of the same data
        path = train_moe(MoEConfig(experts=4, steps=40, batch=8), coefficient, blocks, tmp_path / f"b{coefficient}")
        moe = load_model(str(path)).model
        with torch.no_grad(), probes.expert_routing(moe) as routing:
            moe(blocks, return_type=None)
        routed[coefficient] = routing.table()
    assert (routed[1.0]["balance"] < routed[0.0]["balance"]).all()
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_moe(MoEConfig(batch=128), 0.0, blocks, tmp_path / "other")
    with pytest.raises(ValueError, match="balance coefficient -1"):
        build_moe(MoEConfig(), -1.0)


def _saved(model_and_tokenizer, folder):
    model, tok = model_and_tokenizer
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_probes_pipeline_on_the_tiny_model(data_dir, capsys):
    from pipelines import probes as pipeline
    from workbench.jobs import run_job
    from workbench.store import Store

    store = Store(data_dir / "workbench.duckdb")
    small = dict(model="tiny", per_label=3, tokens=16, prompt_tokens=8, moe={"steps": 5, "batch": 4}, moe_blocks=8,
                 moe_seeds=[0], balance_coefficients=[0.0, 0.01])
    with pytest.raises(ValueError, match=r"layers \[5\] out of range"):
        run_job("probes", store, progress=False, **small, layers=[0, 5])
    with pytest.raises(ValueError, match="unknown corpus 'no-such-corpus'"):
        run_job("probes", store, progress=False, **{**small, "moe_corpus": "no-such-corpus"})
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        run_job("probes", store, progress=False, **{**small, "moe": {"batch": 16}})
    assert store.query("SELECT count(*) AS n FROM runs")["n"].item() == 0   # refused before any write
    run_id = run_job("probes", store, progress=False, **small)
    tables = {name: store.query(f"SELECT * FROM {name} WHERE run_id = ? ORDER BY ALL", [run_id])
              for name in pipeline.TABLES}
    assert len(tables["probe_sparsity"]) == 2 * 3 and tables["probe_sparsity"]["token_fraction"].between(0, 1).all()
    core = tables["probe_core"]
    assert len(core) == 2 * 3 and core["stability"].between(0, 1).all()
    assert core["stability_random"].tolist()[:3] == pytest.approx([0.2 / 1.8, 0.4 / 1.6, 0.6 / 1.4])
    cost = tables["probe_core_cost"]
    assert sorted(cost["selection"].unique()) == ["core", "random"] and len(cost) == 6
    assert cost["tokens"].eq(5 * 3 * 7).all()   # bbc has 5 labels, 3 sequences each, positions 8..14 predict
    routing = tables["probe_routing"]
    assert len(routing) == 2 * 2 and routing["load"].map(sum).tolist() == pytest.approx([1.0] * 4)
    assert routing["model"].eq("tiny-moe-8x2").all()
    capsys.readouterr()
    assert run_job("probes", store, progress=False, **small) == run_id
    assert "already finished" in capsys.readouterr().out


def test_probes_config_refuses_bad_values():
    from pipelines.probes import ProbesConfig

    with pytest.raises(ValueError, match=r"thresholds \[-0.1\] out of range"):
        ProbesConfig(thresholds=[0.05, -0.1])
    with pytest.raises(ValueError, match="core fraction 1.5 out of range"):
        ProbesConfig(core_fractions=[0.2, 1.5])
    with pytest.raises(ValueError, match="prompt_tokens"):
        ProbesConfig(tokens=16, prompt_tokens=15)
    with pytest.raises(ValueError, match="balance coefficient -0.5"):
        ProbesConfig(balance_coefficients=[-0.5])
    with pytest.raises(ValueError, match="repeat a layer"):
        ProbesConfig(layers=[3, 3])
    with pytest.raises(ValueError, match="moe_context"):
        ProbesConfig(moe_context=1000)
