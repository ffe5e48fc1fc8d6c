"""Circuit discovery: scoring on hand-built code tables, patching identities on the tiny model,
the tasks on SmolLM2's tokenizer, a known-answer case for the discrete SAE, the pipeline end to end."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from pipelines.circuits import CircuitsConfig, discrete_scores
from workbench import circuits
from workbench.circuit_tasks import TASKS, Task, TaskError, _Words, build_task, task_from_prompts
from workbench.store import Store

# Six prompts (three positives first) x three heads, codes < 5.
CODES = torch.tensor([[1, 0, 2],
                      [2, 0, 3],
                      [1, 0, 3],
                      [3, 0, 3],
                      [3, 1, 4],
                      [4, 1, 4]])
POSITIVE = torch.tensor([True, True, True, False, False, False])


def test_node_scores_count_codes_seen_only_in_positives():
    # head 0: positives {1, 2}, negatives {3, 4} -> 2; head 1: {0} vs {0, 1} -> 0; head 2: {2, 3} vs {3, 4} -> 1
    assert circuits.node_scores(CODES, POSITIVE, 5).tolist() == [2.0, 0.0, 1.0]
    assert circuits.node_scores(CODES, POSITIVE, 5, normalise=True).tolist() == pytest.approx([2 / 4, 0.0, 1 / 3])


def test_edge_scores_count_code_pairs_seen_only_in_positives():
    # (0,1): positive pairs {(1,0), (2,0)}, negatives {(3,0), (3,1), (4,1)} -> 2
    # (0,2): {(1,2), (2,3), (1,3)} vs {(3,3), (3,4), (4,4)} -> 3
    # (1,2): {(0,2), (0,3)} vs {(0,3), (1,4)} -> 1
    expected = torch.tensor([[0.0, 2.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert torch.equal(circuits.edge_scores(CODES, POSITIVE, 5, chunk=2), expected)


def test_head_votes_count_heads_of_the_top_pairs():
    pairs = torch.tensor([[0.0, 2.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert circuits.head_votes(pairs, top=1).tolist() == [1.0, 0.0, 1.0]     # only (0, 2)
    assert circuits.head_votes(pairs, top=2).tolist() == [2.0, 1.0, 1.0]     # (0, 2) and (0, 1)
    assert circuits.head_votes(torch.zeros(3, 3)).tolist() == [0.0, 0.0, 0.0]  # no positive pair, no vote


def test_roc_auc_by_hand_and_against_sklearn():
    truth = torch.tensor([True, False, True, False])
    assert circuits.roc_auc(torch.tensor([0.9, 0.1, 0.8, 0.2]), truth) == 1.0
    assert circuits.roc_auc(torch.tensor([0.1, 0.9, 0.2, 0.8]), truth) == 0.0
    assert circuits.roc_auc(torch.tensor([0.5, 0.5, 0.9, 0.1]), truth) == 0.875  # a tie counts one half
    gen = torch.Generator().manual_seed(0)
    scores, labels = torch.randint(0, 5, (200,), generator=gen).float(), torch.rand(200, generator=gen) < 0.3
    assert circuits.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()))
    with pytest.raises(ValueError, match="at least one positive"):
        circuits.roc_auc(torch.ones(3), torch.zeros(3, dtype=torch.bool))


def test_top_fraction_marks_the_largest():
    assert circuits.top_fraction(torch.tensor([[0.1, 0.5], [0.3, 0.0]]), 0.5).tolist() == [[False, True], [True, False]]


def test_discrete_sae_finds_heads_whose_output_tells_positives_apart():
    """Known by construction: heads 0-4 write one of five directions that depend on the example on
    positives and one shared direction on negatives; the other heads write the same noise on both."""
    gen = torch.Generator().manual_seed(0)
    examples, heads, d = 40, 30, 16
    positive = torch.arange(examples) < examples // 2
    directions = 3 * torch.randn(heads, 6, d, generator=gen)
    choice = torch.randint(0, 5, (examples, heads), generator=gen)
    choice[~positive] = 5
    outputs = directions[torch.arange(heads), choice] + 0.05 * torch.randn(examples, heads, d, generator=gen)
    background = torch.randint(0, 6, (examples, heads), generator=gen)
    outputs[:, 5:] = directions[torch.arange(heads), background][:, 5:]
    truth = torch.arange(heads) < 5
    cfg = CircuitsConfig(sae_latents=64, epochs=300, lr=1e-2, pairs=20, candidates=20, sae_prompts=[20],
                         headline_prompts=20, seeds=[0])
    nodes, edges, _ = discrete_scores(cfg, outputs, positive, 20, seed=0)
    assert circuits.roc_auc(nodes, truth) > 0.95
    assert circuits.roc_auc(circuits.head_votes(edges), truth) > 0.95


def random_task(vocab: int, pairs: int = 4, length: int = 6, seed: int = 0) -> Task:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, vocab, (2 * pairs, length), generator=gen).tolist()
    answers = torch.randint(5, vocab, (pairs, 2), generator=gen).tolist()
    return task_from_prompts("random", tokens[:pairs], tokens[pairs:], [[a] for a, _ in answers],
                             [[b] for _, b in answers])


def test_patching_a_head_with_its_own_activation_changes_nothing(tiny):
    model = tiny.model
    task = random_task(model.cfg.d_vocab)
    _, zs = circuits._clean_cache(model, task.tokens, batch=8)
    own = {(layer, head): zs[layer][: task.pairs] for layer in range(model.cfg.n_layers)
           for head in range(model.cfg.n_heads)}
    effects = circuits.ablation_effects(model, task, "mean", batch=3, replacement=own)
    assert effects.abs().max() < 1e-4
    ablated = circuits.ablation_effects(model, task, "mean", batch=3)
    assert ablated.abs().max() > 1e-3   # the real ablation does move the logit difference


def test_ablating_every_head_of_a_layer_equals_ablating_the_attention_output(tiny):
    model, layer = tiny.model, 1
    task = random_task(model.cfg.d_vocab)
    positives = task.tokens[: task.pairs]
    _, cache = model.run_with_cache(positives, names_filter=lambda n: n in (
        f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"))
    mean_z = cache[f"blocks.{layer}.attn.hook_z"].mean(0, keepdim=True)
    mean_out = cache[f"blocks.{layer}.hook_attn_out"].mean(0, keepdim=True)
    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", lambda z, hook: mean_z.expand_as(z))]):
        by_heads = model(positives)
    out_hook = (f"blocks.{layer}.hook_attn_out", lambda a, hook: mean_out.expand_as(a))
    with torch.no_grad(), model.hooks(fwd_hooks=[out_hook]):
        by_layer = model(positives)
    assert torch.allclose(by_heads, by_layer, atol=1e-4)
    assert not torch.allclose(by_heads, model(positives), atol=1e-3)


def test_head_outputs_are_the_per_head_residual_writes(tiny):
    model = tiny.model
    tokens = random_task(model.cfg.d_vocab).tokens
    outputs = circuits.head_outputs(model, tokens, batch=3)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_attn_out"))
    for layer in range(model.cfg.n_layers):
        heads = outputs[:, layer * model.cfg.n_heads:(layer + 1) * model.cfg.n_heads]
        expected = (cache[f"blocks.{layer}.hook_attn_out"] - model.b_O[layer]).mean(1)
        assert torch.allclose(heads.sum(1), expected, atol=1e-4)   # the heads' writes add up to the attention output
    assert circuits.head_outputs(model, tokens, "attn.hook_z").shape[-1] == model.cfg.d_head


def test_attribution_patching_tracks_the_real_ablation(tiny):
    model = tiny.model
    task = random_task(model.cfg.d_vocab, pairs=6)
    real = circuits.ablation_effects(model, task, "resample", batch=4).flatten()
    nodes, edges = circuits.attribution_patching(model, task, "resample", batch=4)
    assert torch.corrcoef(torch.stack([real, nodes.flatten()]))[0, 1] > 0.8
    heads = model.cfg.n_heads
    assert edges[heads:, :].abs().sum() == 0 and edges[:heads, heads:].abs().sum() > 0   # only upward edges


@pytest.mark.parametrize("name", list(TASKS))
def test_tasks_tokenize_to_one_length_with_matched_negatives(smollm2, name):
    task = build_task(name, smollm2.tokenizer, 12, seed=1)
    n = task.pairs
    assert task.tokens.shape[0] == 24 and len(task.correct) == 24
    assert all(not set(c) & set(w) for c, w in zip(task.correct, task.wrong))
    differs = (task.tokens[:n] != task.tokens[n:]).any(1)
    assert differs.all()   # every negative changes its positive
    if name == "ioi":   # the indirect object appears once, the subject twice; the negative's subject is new
        for row, (io,), (s,) in zip(task.tokens[:n].tolist(), task.correct, task.wrong):
            assert row.count(io) == 1 and row.count(s) == 2
        assert all(row.count(s) == 1 for row, (s,) in zip(task.tokens[n:].tolist(), task.wrong))
    if name == "induction":   # the prompt's last tokens repeat its start; the answer comes next
        for row, (answer,) in zip(task.tokens[:n].tolist(), task.correct):
            assert row[8:] == row[:5] and row[5] == answer
    if name == "docstring":   # the answer is a parameter of the positive's signature only
        for pos, neg, (answer,) in zip(task.tokens[:n].tolist(), task.tokens[n:].tolist(), task.correct):
            assert answer in pos[:12] and answer not in neg


def test_bad_tasks_are_refused_before_any_model_work(smollm2):
    with pytest.raises(TaskError, match=r"'Kensingtonshire' is \d+ tokens for this tokenizer"):
        _Words(smollm2.tokenizer).id("Kensingtonshire")
    with pytest.raises(TaskError, match="different lengths"):
        task_from_prompts("t", [[1, 2, 3], [1, 2]], [[1, 2, 3], [4, 5, 6]], [[1], [1]], [[2], [2]])
    with pytest.raises(TaskError, match="unknown task"):
        build_task("sorting", smollm2.tokenizer, 4, 0)
    with pytest.raises(ValueError, match="'blocks.0.hook_mlp_out' is not an attention-head output"):
        CircuitsConfig(head_output="blocks.0.hook_mlp_out")
    with pytest.raises(ValueError, match="must be in 1..10"):
        CircuitsConfig(pairs=5, candidates=5, sae_prompts=[5, 50])


def test_pipeline_stores_every_table_and_resumes(data_dir, tiny, monkeypatch):
    """Storage and resumption do not depend on the model: the tiny one (8 heads) on greater-than."""
    from pipelines import circuits as pipeline
    from workbench.jobs import run_job

    monkeypatch.setattr(pipeline, "load_model", lambda name, store=None: tiny)
    store = Store(data_dir / "workbench.duckdb")
    fields = dict(model="tiny", tasks=["greater-than"], pairs=3, candidates=12, sae_prompts=[2, 6],
                  headline_prompts=2, seeds=[0, 1], epochs=5, sae_latents=8, edges_kept=5, batch=4)
    run_id = run_job("circuits", store, progress=False, **fields)
    results = store.query("SELECT * FROM circuit_results WHERE run_id = ?", [run_id])
    assert set(results["method"]) == {"mean-ablation", "resample-ablation", "attribution", "edge-attribution",
                                      "discrete", "discrete-edge"}
    assert len(results[results["method"] == "discrete"]) == 4 and results["auc"].between(0, 1).all()
    heads = store.query("SELECT * FROM circuit_heads WHERE run_id = ? AND method = 'discrete'", [run_id])
    assert len(heads) == 8 and heads["in_circuit"].sum() == 1   # round(0.1 x 8), at least one
    assert store.query("SELECT accuracy FROM circuit_tasks WHERE run_id = ?", [run_id])["accuracy"].item() > 0
    assert 0 < len(store.query("SELECT * FROM circuit_edges WHERE run_id = ?", [run_id])) <= 10

    def fail(*args, **kwargs):
        raise AssertionError("a finished task was recomputed")

    with store.writer() as con:   # as if killed after its last task: the run is not finished
        con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", [run_id])
    monkeypatch.setattr(pipeline, "run_task", fail)   # the task's artifacts are read back instead
    assert run_job("circuits", store, progress=False, **fields) == run_id
    assert store.run_status(run_id) == "finished"
