"""Codebooks inside a model (workbench/codebooks.py, pipelines/codebooks.py) on the tiny model: an exact
codebook changes nothing, TransformerLens and Hugging Face insertions agree, patching codes changes
exactly the patched positions, the finetuned variant loads with its codebooks and its codes go
through the feature pass like any dictionary's latents; bad input is refused before any write."""

from __future__ import annotations

import copy
import html

import pytest
import torch
import torch.nn.functional as F

from app.views import features
from app.views.common import AppContext
from pipelines.codebooks import CodebooksConfig, run
from saes.codebook import Codebook, CodebookConfig
from tests.autointerp.interp_helpers import start
from workbench import cli, codebooks
from workbench.models import load_model
from workbench.store import Store

HOOK = "blocks.0.attn.hook_z"
TOKENS = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29], [2, 6, 10, 14, 18, 22, 26, 30]])
N_CODES = 5


def head_codebook(tiny, k: int = 1, codes: int = N_CODES) -> Codebook:
    cfg = tiny.model.cfg
    return Codebook(CodebookConfig(d_in=cfg.n_heads * cfg.d_head, d_sae=cfg.n_heads * codes, groups=cfg.n_heads,
                                   k=k, hook_point=HOOK)).eval()


@pytest.fixture
def fresh_tiny(tiny):
    """A copy of the tiny model that a test may insert codebooks into."""
    loaded = copy.copy(tiny)
    loaded.model = copy.deepcopy(tiny.model)
    return loaded


def test_a_codebook_that_holds_its_inputs_leaves_the_logits_unchanged(fresh_tiny):
    """Heads write one of five fixed vectors (zero mean, unit variance: LayerNorm leaves them as they
    are); a codebook of exactly those vectors, k = 1, returns its input."""
    cb = head_codebook(fresh_tiny)
    d_head = fresh_tiny.model.cfg.d_head
    vectors = F.layer_norm(torch.randn(cb.cfg.groups, N_CODES, d_head, generator=torch.Generator().manual_seed(0)),
                           (d_head,))
    with torch.no_grad():
        cb.codebook.copy_(vectors)

    def write_known_vectors(z, hook):
        choice = torch.arange(z.shape[1]) % N_CODES
        return vectors[:, choice].permute(1, 0, 2).expand_as(z).clone()

    model = fresh_tiny.model
    codebooks.insert(model, [cb])
    with torch.no_grad(), model.hooks(fwd_hooks=[(HOOK, write_known_vectors)]):
        with_codebook = model(TOKENS)
        with codebooks.disabled(model):
            without = model(TOKENS)
    torch.testing.assert_close(with_codebook, without, atol=1e-5, rtol=1e-5)
    random_cb = head_codebook(fresh_tiny, codes=N_CODES)   # the check can fail: other codes change the logits
    model.hook_dict[HOOK].codebook = random_cb
    with torch.no_grad(), model.hooks(fwd_hooks=[(HOOK, write_known_vectors)]):
        assert not torch.allclose(model(TOKENS), without, atol=1e-3)


def test_transformer_lens_and_hugging_face_insertions_agree(fresh_tiny, tiny):
    cb = head_codebook(fresh_tiny, k=2)
    _, cache = tiny.model.run_with_cache(TOKENS, names_filter=[HOOK])
    cb.initialize_from_sample(cache[HOOK].flatten(-2), torch.Generator().manual_seed(0))
    codebooks.insert(fresh_tiny.model, [cb])
    with torch.no_grad(), codebooks.inserted_hf(tiny.hf, [cb]) as insertion:
        hf_logits = tiny.hf(TOKENS).logits
        tl_logits = fresh_tiny.model(TOKENS)
        # the same codes, but for near-ties: the two models' float32 head outputs differ in the last bits,
        # which may swap a group's slots or the k-th and next code
        same = insertion.ids[HOOK].sort(-1).values == codebooks.code_ids(fresh_tiny.model, TOKENS, HOOK).sort(-1).values
        assert same.float().mean() >= 0.95
    torch.testing.assert_close(tl_logits, hf_logits, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(tiny.hf(TOKENS).logits, hf_logits, atol=1e-3)   # the hooks were removed


def test_patching_codes_changes_exactly_the_patched_positions(fresh_tiny, tiny):
    cb = head_codebook(fresh_tiny, k=1)
    _, cache = tiny.model.run_with_cache(TOKENS, names_filter=[HOOK])
    cb.initialize_from_sample(cache[HOOK].flatten(-2), torch.Generator().manual_seed(1))
    model = fresh_tiny.model
    codebooks.insert(model, [cb])
    before = codebooks.code_ids(model, TOKENS, HOOK)
    with torch.no_grad():
        logits = model(TOKENS)
    forced = [2 * N_CODES + 4]                          # head 2, local code 4
    with codebooks.patch_codes(model, HOOK, forced, positions=[3, 5]), torch.no_grad():
        after = codebooks.code_ids(model, TOKENS, HOOK)
        patched_logits = model(TOKENS)
    changed = (after != before).any(-1)
    assert bool((after[:, [3, 5], 2] == forced[0]).all())
    assert not changed[:, [0, 1, 2, 4, 6, 7]].any()
    assert torch.equal(after[..., [0, 1, 3]], before[..., [0, 1, 3]])   # other heads keep their codes
    torch.testing.assert_close(patched_logits[:, :3], logits[:, :3])      # causal: earlier positions unchanged
    assert torch.equal(codebooks.code_ids(model, TOKENS, HOOK), before)    # the patch ends with the block


def test_patching_refuses_what_the_codebook_cannot_do(fresh_tiny):
    codebooks.insert(fresh_tiny.model, [head_codebook(fresh_tiny, k=1)])
    model = fresh_tiny.model
    cases = [("blocks.1.attn.hook_z", [0], "no codebook at 'blocks.1.attn.hook_z'"),
             (HOOK, [0, 1], "2 codes forced in group 0 .* only k=1"),
             (HOOK, [4 * N_CODES], "code ids must be in \\[0, 20\\)")]
    for hook_point, forced, message in cases:
        with pytest.raises(ValueError, match=message), codebooks.patch_codes(model, hook_point, forced):
            pass
    with pytest.raises(ValueError, match="has a codebook already"):
        codebooks.insert(model, [head_codebook(fresh_tiny)])


SMALL = {"name": "tiny-cb", "model": "tiny", "corpus": "wiki-sample", "hook_points": [HOOK], "codes": 16, "k": 2,
         "steps": 12, "batch": 4, "context": 32, "eval_blocks": 4, "init_blocks": 4}


def test_the_finetuned_variant_loads_with_its_codebooks_and_its_codes_go_through_every_stage(data_dir):
    store = Store(data_dir / "w.duckdb")
    run(CodebooksConfig(**SMALL | {"hook_points": [HOOK, "blocks.1.hook_mlp_out"]}), store, progress=False)
    variant = load_model("tiny-cb", store=store)
    assert variant.hf is None and sorted(codebooks.codebooks_of(variant.model)) == [HOOK, "blocks.1.hook_mlp_out"]
    with torch.no_grad():
        plain = variant.model(TOKENS)
        with codebooks.disabled(variant.model):
            assert not torch.allclose(variant.model(TOKENS), plain, atol=1e-3)
    rows = store.query("SELECT dict_id, method, model, hook_point, d_dict, metrics FROM dictionaries ORDER BY dict_id")
    assert rows["method"].tolist() == ["codebook"] * 2 and rows["model"].tolist() == ["tiny-cb"] * 2
    assert rows["d_dict"].tolist() == [64, 16]          # one codebook per head at hook_z, one on the MLP output
    dict_id = rows["dict_id"].iloc[0]
    at = ["--store", str(store.path)]
    assert cli.main([*at, "features", "--dict-id", dict_id, "--tokens", "2048", "--context", "32"]) == 0
    stats = store.query("SELECT feature, freq FROM feature_stats WHERE dict_id = ? ORDER BY freq DESC", [dict_id])
    assert 0 < len(stats) <= 64 and abs(stats["freq"].sum() - 4 * 2) < 1e-6   # each token: 4 heads x k=2 codes
    assert cli.main([*at, "check-examples", "--dict-id", dict_id]) == 0      # examples reproduce on the variant
    feature = int(stats["feature"].iloc[0])
    server = start()
    try:
        assert cli.main([*at, "interpret", "--dict-id", dict_id, "--features", str(feature), "--prefill", "true",
                         "--scorers", "detection,intervention", "--llm.base-url", server.url, "--n-train", "6",
                         "--n-test", "4", "--n-inactive", "4", "--intervention-prompts", "2",
                         "--intervention-tokens", "4", "--progress", "false"]) == 0
    finally:
        server.stop()
    explanation = store.query("SELECT text FROM explanations WHERE dict_id = ?", [dict_id])["text"]
    assert len(explanation) == 1
    message, header, histogram, examples = features.render(AppContext(store, live=None, semantic=None),  # type: ignore[arg-type]
                                                           dict_id, feature)
    assert message == "" and f"Feature {feature}" in header and html.escape(explanation.iloc[0]) in header
    assert "<svg" in histogram and "Top activations" in examples and examples.count('class="wb-example"') >= 1
    run(CodebooksConfig(**SMALL), store, progress=False)
    assert len(store.query("SELECT * FROM models")) == 1   # a finished run is not redone


@pytest.mark.parametrize(("fields", "message"), [
    ({"k": 20}, "k \\(20\\) must not exceed the codebook's size \\(codes=16\\)"),
    ({"hook_points": ["blocks.5.attn.hook_z"]}, "layer 5 out of range"),
    ({"hook_points": ["blocks.0.attn.hook_q"]}, "a codebook cannot go at blocks.0.attn.hook_q"),
    ({"model": "tiny-cb-parent"}, "unknown parent model"),
])
def test_bad_codebook_runs_are_refused_before_any_write(data_dir, fields, message):
    store = Store(data_dir / "w.duckdb")
    store.init()
    with pytest.raises(ValueError, match=message):
        run(CodebooksConfig(**SMALL | fields), store, progress=False)
    assert store.query("SELECT count(*) AS n FROM runs")["n"].item() == 0
    assert not (data_dir / "artifacts" / "models").exists()


def test_train_points_codebooks_to_their_own_pipeline(data_dir, capsys):
    assert cli.main(["--store", str(data_dir / "w.duckdb"), "train", "--architecture", "codebook"]) == 2
    assert "codebook is fitted by finetune of the model with it inside" in capsys.readouterr().err
    assert not (data_dir / "w.duckdb").exists()


def test_code_contrast_and_the_strongest_codes_of_each_group():
    ids = torch.tensor([[5, 1], [5, 1], [5, 2], [3, 2], [4, 2], [3, 6]])   # tokens x slots, global ids
    in_class = torch.tensor([True, True, True, False, False, False])
    difference = codebooks.code_contrast(ids, in_class, d_sae=8)
    assert difference.tolist() == pytest.approx([0, 2 / 3, 1 / 3 - 2 / 3, -2 / 3, -1 / 3, 1, -1 / 3, 0])
    codebook = Codebook(CodebookConfig(d_in=4, d_sae=8, groups=2, k=2))   # codes 0-3 in group 0, 4-7 in group 1
    # group 1's best two (5: 1, 7: 0) sum to 1 > group 0's (1: 2/3, 0: 0)
    assert codebooks.strongest_codes_by_group(difference, codebook) == [(1, [5, 7]), (0, [1, 0])]
