import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from workbench.fetch import qwen_gguf_path
from workbench.models import LINEAR_WEIGHTS, QWEN_CODER, ModelError, load_model, parse_hook_point
from workbench.paths import write_atomically


def _prompt_ids(loaded, text: str) -> torch.Tensor:
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([[loaded.tokenizer.bos_token_id] + ids])


@torch.inference_mode()
def _logit_gap(loaded, text: str) -> tuple[float, float]:
    tokens = _prompt_ids(loaded, text)
    hooked, plain = loaded.model(tokens), loaded.hf(tokens).logits
    return (hooked - plain).abs().max().item(), plain.abs().max().item()


def test_tiny_logit_parity(tiny):
    gap, scale = _logit_gap(tiny, "the city of London is the capital of England")
    # float32 on the same kernels up to operation order: ~1e-7 relative
    assert gap < 1e-5 * max(scale, 1.0), gap


def test_smollm2_logit_parity(smollm2):
    gap, scale = _logit_gap(smollm2, "The capital of France is Paris. The capital of Italy is")
    print(f"SmolLM2 max |logit diff| = {gap:.2e} (max |logit| {scale:.1f})")
    # TransformerLens re-implements attention (no SDPA) and RMSNorm: float32 reassociation over 30
    # layers gives ~1e-4 absolute on logits of magnitude ~20 (STACK.md measured 8e-5).
    assert gap < 5e-4, gap


def test_qwen2_architecture_logit_parity(tiny_qwen_dir):
    """The Qwen2 path of `qwen2.5-coder-1.5b-instruct` (its TransformerLens config, attention biases,
    untied unembedding) on a tiny Qwen2 folder."""
    gap, scale = _logit_gap(load_model(str(tiny_qwen_dir)), "the city of London is the capital of England")
    assert gap < 1e-5 * max(scale, 1.0), gap


@pytest.mark.slow
@pytest.mark.skipif(not qwen_gguf_path().exists(), reason="the Qwen GGUF is fetched by scripts/setup.sh --explainer")
def test_qwen_coder_logit_parity_and_answer():
    """The explainer's GGUF dequantised (~3 min once) and loaded: ~7.5 GB of memory; ~1 min alone,
    14 min at nice 19 beside other jobs here."""
    qwen = load_model(QWEN_CODER)
    text = "The capital of France is Paris. The capital of Italy is"
    gap, scale = _logit_gap(qwen, text)
    print(f"Qwen2.5-Coder max |logit diff| = {gap:.2e} (max |logit| {scale:.1f})")
    assert gap < 5e-4, gap   # measured 1.6e-4 on logits up to 21.5: float32 reassociation over 28 layers
    with torch.inference_mode():
        top = qwen.hf(_prompt_ids(qwen, text)).logits[0, -1].argmax()
    assert qwen.tokenizer.decode(top) == " Rome"


def test_smollm2_greedy_answer(smollm2):
    tok = smollm2.tokenizer
    question = "What is the capital of France? Answer in one sentence."
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    out = smollm2.hf.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_linear_weights_are_laid_out_so_no_forward_copies_them():
    """`load_model` keeps the weights TransformerLens hands to F.linear transposed in memory: the
    `.T.contiguous()` it calls is then the same storage, and the logits are bit for bit those of the
    usual layout."""
    loaded = load_model("tiny")
    tokens = loaded.model.to_tokens("the river flows past the old mill")
    weights = {n: p for n, p in loaded.model.named_parameters() if n.rsplit(".", 1)[-1] in LINEAR_WEIGHTS}
    assert len(weights) == 3 * 2 + 1   # W_gate, W_in, W_out per layer and W_U
    assert all(p.T.contiguous().data_ptr() == p.data_ptr() for p in weights.values())
    with torch.inference_mode():
        laid_out = loaded.model(tokens)
        for param in weights.values():
            param.data = param.data.contiguous()
        usual = loaded.model(tokens)
    assert torch.equal(laid_out, usual)


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown model 'gpt-17'"):
        load_model("gpt-17")


def test_hook_point_validation(tiny):
    assert parse_hook_point(tiny, "blocks.1.hook_resid_post") == 1
    with pytest.raises(ModelError, match="layer 5 out of range"):
        parse_hook_point(tiny, "blocks.5.hook_resid_post")
    with pytest.raises(ModelError, match="unknown hook point"):
        parse_hook_point(tiny, "blocks.0.hook_nonsense")


def test_a_cache_folder_built_by_two_workers_at_once_is_whole(tmp_path):
    """Parallel test workers (or two jobs) may build the tiny model at once: both calls return, the
    folder holds one writer's complete files, and no temporary folder is left behind."""
    folder, both_writing = tmp_path / "models" / "built", threading.Barrier(2)

    def write(tmp: Path) -> None:
        both_writing.wait(timeout=10)
        tmp.mkdir()   # `write` makes its path, as save_pretrained does
        for part in ("a", "b"):
            (tmp / part).write_text(threading.current_thread().name)

    with ThreadPoolExecutor(2, thread_name_prefix="writer") as pool:
        for call in [pool.submit(write_atomically, folder, write) for _ in range(2)]:
            call.result(timeout=30)   # raises what the call raised
    contents = {(folder / part).read_text() for part in ("a", "b")}
    assert len(contents) == 1
    assert sorted(p.name for p in folder.parent.iterdir()) == ["built"]


@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
def test_a_killed_writers_copy_is_removed_by_the_next_write(tmp_path, as_folder):
    """SIGKILL skips write_atomically's clean-up: the copy it leaves is removed by the next write of
    the same path, while a live writer's copy (this process's) and a dead writer's copy of another
    path whose name starts the same are left alone."""
    target = tmp_path / "shard"
    write_half = ("(tmp.mkdir(), (tmp / 'part').write_text('half'))" if as_folder else "tmp.write_text('half')")
    writer = ("import os, sys; from pathlib import Path; from workbench.paths import write_atomically\n"
              f"write_atomically(Path(sys.argv[1]), lambda tmp: ({write_half}, os.kill(os.getpid(), 9)))")
    killed = subprocess.Popen([sys.executable, "-c", writer, str(target)])
    assert killed.wait(timeout=60) == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f"shard.{killed.pid}-") and left[0].endswith(".partial")
    live = tmp_path / f"shard.{os.getpid()}-0123456789ab.partial"
    sibling = tmp_path / f"shard.2-epochs.{killed.pid}-0123456789ab.partial"   # path "shard.2-epochs"'s copy
    for keep in (live, sibling):
        keep.write_text("being written")
    write_atomically(target, lambda tmp: tmp.write_text("whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["shard", live.name, sibling.name])
    assert target.read_text() == "whole"
