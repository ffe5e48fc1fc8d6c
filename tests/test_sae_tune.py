"""`workbench sae-tune` (pipelines/sae_tune.py) on the tiny model: an SAE that reconstructs exactly
changes nothing, only adapters learn, the answer mask and grading by hand, the stored table, a
resumed run, and bad input refused before anything is written."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import pipelines.sae_tune as sae_tune
import saes
from pipelines.sae_tune import Question, graded, inserted, kl_to_parent, make_batch, questions
from workbench import cli, lora
from workbench.store import Store

SMALL = ["--model", "tiny", "--layer", "1", "--steps", "2", "--source-steps", "2", "--batch", "4", "--seeds", "0,1",
         "--sae-tokens", "1500", "--sae-expansion", "2", "--sae-k", "4", "--max-new-tokens", "2",
         "--sae-corpus", "wiki-sample", "--progress", "false"]


def exact_sae(d: int) -> saes.Dictionary:
    """ReLU SAE with latents +e_i and -e_i: relu(x) - relu(-x) = x, exactly."""
    sae = saes.create("relu", d_in=d, d_sae=2 * d, hook_point="blocks.1.hook_resid_post")
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_batch(tiny):
    train = questions(tiny, "train", 0.3)[:3]
    return make_batch(train, tiny.tokenizer.eos_token_id)


def test_an_exact_sae_leaves_the_logits_unchanged_and_a_random_one_does_not(tiny, tiny_batch):
    hf, d = tiny.hf, tiny.d_model
    x = torch.randn(5, d)
    torch.testing.assert_close(exact_sae(d)(x)[0], x)
    with torch.no_grad():
        clean = hf(input_ids=tiny_batch.ids, attention_mask=tiny_batch.mask).logits
        with inserted(hf, exact_sae(d), 1, max_norm_ratio=0.0):
            spliced = hf(input_ids=tiny_batch.ids, attention_mask=tiny_batch.mask).logits
        with inserted(hf, saes.create("relu", d_in=d, d_sae=4 * d, hook_point="x"), 1, max_norm_ratio=0.0):
            random = hf(input_ids=tiny_batch.ids, attention_mask=tiny_batch.mask).logits
    torch.testing.assert_close(spliced, clean, atol=1e-5, rtol=1e-5)
    assert (random - clean).abs().max() > 1e-2


def test_only_adapters_receive_gradients_and_the_kl_starts_at_zero(tiny, tiny_batch):
    hf = copy.deepcopy(tiny.hf)
    adapters = lora.adapt(hf, sae_tune.LORA_TARGETS, rank=2, alpha=4.0, seed=0)
    kl = kl_to_parent(hf, adapters, exact_sae(tiny.d_model), 1, 0.0, tiny_batch)
    assert abs(kl.item()) < 1e-5                         # B = 0 and an exact SAE: student = teacher
    with torch.no_grad():
        for adapter in adapters.values():
            adapter.B.normal_(std=0.1)
    kl_to_parent(hf, adapters, exact_sae(tiny.d_model), 1, 0.0, tiny_batch).backward()
    own = {id(p) for p in lora.parameters(adapters)}
    assert all(p.grad is None for p in hf.parameters() if id(p) not in own)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.parameters(adapters))


def test_answer_mask_and_grading_by_hand():
    qs = [Question("A", "x", [1, 2, 3], [7, 8]), Question("B", "y", [1, 2], [9])]
    batch = make_batch(qs, pad_id=0)
    assert batch.ids.tolist() == [[1, 2, 3, 7, 8], [1, 2, 9, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # position t predicts token t + 1: the answers are predicted from the last prompt token on
    assert batch.answer.tolist() == [[False, False, True, True], [False, True, False, False]]
    assert graded("Paris.\nIt is in France", "Paris") == (True, True)
    assert graded("The capital is Paris.", "Paris") == (False, True)
    assert graded(" paris", "Paris") == (True, True)
    assert graded("Lyon", "Paris") == (False, False)


def test_questions_split_the_countries_and_end_the_prompt_at_the_answer(tiny):
    train, held_out = questions(tiny, "train", 0.3), questions(tiny, "eval", 0.3)
    assert not {q.country for q in train} & {q.country for q in held_out}
    assert 0.2 < len(held_out) / (len(train) + len(held_out)) < 0.4
    q = next(q for q in train if q.country == "France")
    ids = lambda text: tiny.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    opener, answer = ids("<|im_start|>assistant\n"), ids("Paris<|im_end|>")
    assert q.prompt[-len(opener):] == opener and q.answer[: len(answer)] == answer


def test_sae_tune_stores_every_model_and_resumes_at_the_next(data_dir, monkeypatch):
    store = Store(data_dir / "w.duckdb")
    real, trained = sae_tune.finetune, []

    def recorded(cfg, hf, train, pad, seed, steps, loss, desc, progress):
        trained.append(desc)
        if desc == failing:
            raise RuntimeError("killed")
        return real(cfg, hf, train, pad, seed, steps, loss, desc, progress)

    monkeypatch.setattr(sae_tune, "finetune", recorded)
    failing = "sae-tuned 1"
    assert cli.main(["--store", str(store.path), "sae-tune", *SMALL]) == 2
    assert trained == ["source", "sft 0", "sae-tuned 0", "sft 1", "sae-tuned 1"]
    trained.clear()
    failing = ""
    assert cli.main(["--store", str(store.path), "sae-tune", *SMALL]) == 0
    assert trained == ["sae-tuned 1"]                       # everything else was read back
    rows = store.query("SELECT * FROM sae_tune_results ORDER BY method, seed")
    assert list(zip(rows["method"], rows["seed"])) == [("base", 0), ("sae-tuned", 0), ("sae-tuned", 1), ("sft", 0),
                                                       ("sft", 1), ("source", 0)]
    assert rows["accuracy"].between(0, 1).all() and (rows["n_eval"] == rows["n_eval"].iloc[0]).all()
    answers = json.loads(rows["details"].iloc[0])["answers"]
    assert len(answers) == rows["n_eval"].iloc[0]


@pytest.mark.parametrize(("extra", "message"), [
    (["--layer", "7"], "layer 7 does not exist"), (["--eval-fraction", "1.5"], "eval_fraction must be in (0, 1)"),
    (["--targets", "nope_proj"], "no linear layer named ['nope_proj']"), (["--seeds", "1,1"], "seeds must be distinct"),
    (["--sae-corpus", "nowhere"], "unknown corpus 'nowhere'"),
])
def test_bad_input_is_refused_before_anything_is_written(data_dir, capsys, extra, message):
    store = Store(data_dir / "w.duckdb")
    assert cli.main(["--store", str(store.path), "sae-tune", *SMALL, *extra]) == 2
    assert message in capsys.readouterr().err
    assert store.query("SELECT count(*) AS n FROM runs")["n"].item() == 0
    assert not (data_dir / "artifacts" / "sae_tune").exists()
