"""Similarity measures (workbench/similarity.py) on cases whose answer is known by construction, and
`workbench compare-layers` end to end on the tiny model, with itself and with a tiny Qwen2 of another
tokenizer and depth (the app's heatmap of that rectangular run too)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from app import charts, data
from pipelines.compare_layers import CompareLayersConfig, _prompts, _saved_path
from saes.itda import ITDA, ITDAConfig
from workbench import cli, similarity
from workbench.activations import hook_activations
from workbench.config import build_config
from workbench.models import load_model
from workbench.store import Store


def acts(n: int = 300, d: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * torch.linspace(0.5, 3, d)


def rotation(d: int, seed: int = 1) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))[0]


def test_linear_cka_equals_the_gram_matrix_formula():
    x, y = acts(), acts(d=7, seed=2) + acts(d=12)[:, :7]
    k, l_ = x @ x.T, y @ y.T
    h = torch.eye(len(x)) - 1 / len(x)
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)   # noqa: E731
    by_hand = float(hsic(k, l_) / (hsic(k, k) * hsic(l_, l_)).sqrt())
    assert similarity.linear_cka(x, y) == pytest.approx(by_hand, rel=1e-5)


def test_cka_and_relative_representations_ignore_rotation_and_scale_and_cka_sees_independence():
    x = acts()
    moved = 3 * x @ rotation(12)
    assert similarity.linear_cka(x, moved) == pytest.approx(1, abs=1e-9)
    assert similarity.relative_similarity(x, moved, torch.arange(20)) == pytest.approx(1, abs=1e-9)
    assert similarity.linear_cka(x, acts(seed=7)) < 0.15


def test_svcca_is_one_under_an_invertible_map_and_low_for_independent_data():
    x = acts()
    mixed = x @ (torch.eye(12) + 0.3 * torch.randn(12, 12, generator=torch.Generator().manual_seed(3)))
    assert similarity.svcca(x, mixed, keep=1.0) == pytest.approx(1, abs=1e-6)
    assert similarity.svcca(x, acts(seed=8), keep=1.0) < 0.3


def test_paired_measures_refuse_unpaired_activations():
    with pytest.raises(ValueError, match="paired activations"):
        similarity.linear_cka(acts(300), acts(200))


def test_label_jaccard_by_hand_and_matching_accuracy():
    a = torch.tensor([[0, 1], [0, 2], [1, 3]])
    b = torch.tensor([[0, 2], [1, 3], [2, 0], [2, 1]])
    assert similarity.label_jaccard(a, b) == pytest.approx(2 / 5)
    s = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.3], [0.0, 0.1, 0.5]])
    assert similarity.matching_accuracy(s) == pytest.approx(2 / 3)
    assert similarity.matching_accuracy(s, torch.tensor([0, 2, 2])) == 1.0


def test_layers_of_different_depth_match_by_relative_depth():
    # layer i of A -> the layer of B nearest i (n_b - 1) / (n_a - 1)
    assert similarity.relative_depth(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert similarity.relative_depth(2, 3).tolist() == [0, 2]
    assert similarity.relative_depth(3, 2).tolist() == [0, 1, 1]          # 0.5: halves round up
    depth = similarity.relative_depth(30, 28)                              # SmolLM2 against Qwen2.5
    assert depth[[0, 7, 8, 15, 22, 29]].tolist() == [0, 7, 7, 14, 20, 27]  # 8*27/29 = 7.45, 22*27/29 = 20.48
    s = torch.tensor([[0.9, 0.1], [0.2, 0.3], [0.8, 0.5]])                 # 3 layers of A against 2 of B
    assert similarity.matching_accuracy(s) == pytest.approx(2 / 3)         # expected 0, 1, 1: the last row misses
    assert similarity.matching_accuracy(s, within=1) == 1.0                # ... by one layer


def itda(labels: list[tuple[int, int]], stream: str = "s") -> ITDA:
    d = ITDA(ITDAConfig(d_in=4, d_sae=len(labels), l0=1, stream=stream))
    d.labels = torch.tensor([[s, p, 0] for s, p in labels])
    return d


def test_jaccard_of_a_dictionary_with_itself_is_one_with_a_disjoint_one_zero_and_streams_must_match():
    a = itda([(0, 1), (0, 2), (3, 4)])
    assert similarity.jaccard(a, a) == 1.0
    assert similarity.jaccard(a, itda([(1, 1), (2, 2)])) == 0.0
    with pytest.raises(ValueError, match="different prompt streams"):
        similarity.jaccard(a, itda([(0, 1)], stream="other"))
    with pytest.raises(ValueError, match="compares ITDA dictionaries"):
        similarity.jaccard(a, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="built dictionaries"):
        similarity.jaccard(a, itda([(-1, -1)]))


COMPARE = ["compare-layers", "--model-a", "tiny", "--model-b", "tiny", "--corpus", "wiki-sample", "--context", "64",
           "--tokens", "3000", "--paired-tokens", "500", "--anchors", "50", "--itda.d-sae", "128", "--itda.l0", "4",
           "--itda.batch-rows", "256", "--itda.mix-rows", "1024", "--progress", "false"]


def test_compare_layers_stores_every_measure_for_every_layer_pair(data_dir):
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), *COMPARE]) == 0
    rows = store.query("SELECT measure, layer_a, layer_b, value FROM similarities")
    assert len(rows) == len(similarity.MEASURES) * 4
    diagonal = rows[(rows.layer_a == rows.layer_b) & (rows.measure != "jaccard")]
    assert (diagonal.value - 1).abs().max() < 1e-6          # the same model's layer with itself
    jaccard = rows[rows.measure == "jaccard"].value
    assert ((jaccard > 0) & (jaccard < 1)).all()               # seeds 0 and 1 pick some tokens alike, not all


@pytest.mark.parametrize(("extra", "message"), [
    (["--layers", "0,5"], "layers [5] do not exist"), (["--itda.threshold", "1.5"], "threshold is a relative loss"),
    (["--itda.l0", "200"], "l0 must be in"),
    (["--site", "hook_nothing"], "hook_nothing"), (["--corpus", "no-such-corpus"], "no-such-corpus"),
])
def test_compare_layers_refuses_bad_input_before_any_write(data_dir, extra, message, capsys):
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), *COMPARE, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not store.path.exists() or store.query("SELECT count(*) AS n FROM runs")["n"].item() == 0


def test_an_interrupted_compare_resumes_from_the_layers_it_saved(data_dir):
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), *COMPARE]) == 0
    first = store.query("SELECT measure, layer_a, layer_b, value FROM similarities ORDER BY ALL")
    cfg = build_config(CompareLayersConfig, values={"model_a": "tiny", "model_b": "tiny", "corpus": "wiki-sample",
                                                    "context": 64, "tokens": 3000, "paired_tokens": 500,
                                                    "anchors": 50, "itda": {"d_sae": 128, "l0": 4, "batch_rows": 256,
                                                                            "mix_rows": 1024}, "progress": False})
    tiny = load_model("tiny")
    stream = _prompts(cfg, {"a": tiny, "b": tiny})[0]
    saved = {(layer, seed): _saved_path(cfg, "tiny", layer, seed, stream) for layer in (0, 1) for seed in (0, 1)}
    assert all(p.exists() for p in saved.values())
    kept = {p: p.stat().st_mtime_ns for (layer, _), p in saved.items() if layer == 0}
    for (layer, _), p in saved.items():
        if layer == 1:
            p.unlink()                                    # as if killed while building layer 1
    with store.writer() as con:
        con.execute("UPDATE runs SET status = 'interrupted'")
    assert cli.main(["--store", str(store.path), *COMPARE]) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept   # layer 0 read back, not rebuilt
    again = store.query("SELECT measure, layer_a, layer_b, value FROM similarities ORDER BY ALL")
    assert again.equals(first)                             # the same builds: the stream and seeds are fixed


def test_compare_layers_across_tokenizers_and_depths_pairs_aligned_tokens(data_dir, tiny_qwen_dir):
    """tiny (word-level, 2 layers) against a Qwen2 (byte-level BPE, 3 layers): a [2, 3] matrix per
    measure, drawn by the app; paired row i of either model is the i-th aligned token end of the
    held-out texts (recomputed here from the first sequence), and every atom label is an aligned
    index of its training sequence."""
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), *COMPARE, "--model-b", str(tiny_qwen_dir)]) == 0
    rows = store.query("SELECT measure, layer_a, layer_b, value FROM similarities")
    assert len(rows) == len(similarity.MEASURES) * 2 * 3
    assert sorted(set(zip(rows.layer_a, rows.layer_b))) == [(a, b) for a in range(2) for b in range(3)]
    assert ((rows.value >= 0) & (rows.value <= 1 + 1e-6)).all()
    assert (rows[rows.measure == "jaccard"].value > 0).any()          # some atoms are the same token end

    matrix = data.similarity_matrix(store, store.query("SELECT run_id FROM runs")["run_id"].item(), "cka")
    assert matrix.shape == (2, 3) and matrix.attrs["model_b"] == str(tiny_qwen_dir)
    figure = charts.similarity_heatmap(matrix, "cka")
    assert len(figure.data[0].z) == 2 and len(figure.data[0].z[0]) == 3
    best = torch.tensor(matrix.to_numpy()).argmax(1)
    assert similarity.matching_accuracy(torch.tensor(matrix.to_numpy())) == float((best == torch.tensor([0, 2])).mean(
        dtype=torch.float64))

    cfg = build_config(CompareLayersConfig, values={"model_a": "tiny", "model_b": str(tiny_qwen_dir),
                                                    "corpus": "wiki-sample", "context": 64, "tokens": 3000,
                                                    "paired_tokens": 500, "anchors": 50,
                                                    "itda": {"d_sae": 128, "l0": 4, "batch_rows": 256,
                                                             "mix_rows": 1024}, "progress": False})
    models = {"a": load_model("tiny"), "b": load_model(str(tiny_qwen_dir))}
    stream, prompts = _prompts(cfg, models)
    for side, name, layer, seed in (("a", "tiny", 1, 0), ("b", str(tiny_qwen_dir), 2, 1)):
        saved = load_file(str(_saved_path(cfg, name, layer, seed, stream)))
        first = next(prompts["eval"].sequences(side))
        aligned = prompts["eval"].index(side, torch.zeros(len(first), dtype=torch.long), torch.arange(len(first))) >= 0
        acts = hook_activations(models[side], f"blocks.{layer}.hook_resid_post", first[None])[0][aligned]
        assert len(saved["paired"]) == 500
        assert torch.allclose(saved["paired"][: len(acts)], acts, atol=1e-4)
        train = list(prompts["train"].sequences(side))
        for seq, k in saved["labels"].tolist():
            index = prompts["train"].index(side, torch.full((len(train[seq]),), seq), torch.arange(len(train[seq])))
            assert 0 <= k <= int(index.max())


@pytest.mark.parametrize(("extra", "message"), [
    (["--layers", "0,1"], "leave layers empty"), (["--corpus", "sharegpt-sample"], "chat documents"),
])
def test_compare_layers_across_tokenizers_refuses_bad_input_before_any_write(data_dir, tiny_qwen_dir, extra, message,
                                                                            capsys):
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), *COMPARE, "--model-b", str(tiny_qwen_dir), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not store.path.exists() or store.query("SELECT count(*) AS n FROM runs")["n"].item() == 0
