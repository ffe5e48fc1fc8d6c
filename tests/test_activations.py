import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from workbench.activations import (
    CACHE_FORMAT,
    MixingBuffer,
    Rows,
    ShardCache,
    StreamConfig,
    cached_activations,
    hook_activations,
    raw_activations,
)

HOOKS = ["blocks.1.hook_resid_post", "blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.1.hook_attn_out",
         "blocks.0.mlp.hook_post", "blocks.1.attn.hook_z"]


@pytest.mark.parametrize("hook", HOOKS)
def test_hf_fast_path_matches_transformer_lens(tiny, hook):
    tokens = torch.randint(0, tiny.model.cfg.d_vocab, (3, 17))
    fast, reference = hook_activations(tiny, hook, tokens, "hf"), hook_activations(tiny, hook, tokens, "tl")
    assert fast.shape == reference.shape
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_smollm2_fast_path_matches_transformer_lens(smollm2):
    tokens = torch.randint(0, 49152, (2, 24))
    for hook in ("blocks.12.hook_resid_post", "blocks.12.mlp.hook_post"):
        fast, reference = hook_activations(smollm2, hook, tokens, "hf"), hook_activations(smollm2, hook, tokens, "tl")
        scale = reference.abs().max()
        assert (fast - reference).abs().max() < 1e-5 * scale + 1e-4


def test_mixing_buffer_emits_every_row_once_and_mixes():
    rows = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 3)
    chunks = rows.split(37)
    batches = list(MixingBuffer(capacity=200, batch_rows=25, seed=1).mix(chunks))
    out = torch.cat(batches)[:, 0]
    assert sorted(out.tolist()) == list(range(1000))
    first = batches[0][:, 0]
    assert first.max() - first.min() > 50  # mixed across many source chunks, not in corpus order
    assert all(len(b) == 25 for b in batches[:-1])


def test_mixing_buffer_rejects_bad_sizes():
    with pytest.raises(ValueError, match="capacity"):
        MixingBuffer(capacity=10, batch_rows=8)


def _sequences(n: int):
    return lambda: iter(torch.randint(3, 900, (n, 12), generator=torch.Generator().manual_seed(0)))


def _cached(tiny, root, budget: int, sequences=None, key=1, shard_rows: int = 50) -> Rows:
    cfg = StreamConfig(hook_point="blocks.1.hook_resid_post", batch_size=4, token_budget=budget)
    stream = cached_activations(tiny, sequences or _sequences(60), cfg, ShardCache(root, {"test": key}, shard_rows),
                                progress=False)
    return Rows.cat(list(stream))


def _assert_same_rows(got: Rows, want: Rows) -> None:
    assert all(torch.equal(getattr(got, f), getattr(want, f)) for f in Rows.FIELDS)


def test_rows_carry_their_sequence_and_position(tiny):
    cfg = StreamConfig(hook_point="blocks.1.hook_resid_post", batch_size=4, token_budget=100)
    rows = Rows.cat(list(raw_activations(tiny, _sequences(60)(), cfg, progress=False)))
    assert len(rows) == 100                                     # 11 rows per sequence: position 0 dropped
    assert rows.seq.tolist() == [i // 11 for i in range(100)] and rows.pos.tolist() == [1 + i % 11 for i in range(100)]
    seqs = list(_sequences(60)())
    assert torch.equal(rows.token[rows.seq == 5], seqs[5][1:])
    one = hook_activations(tiny, cfg.hook_point, seqs[5][None])[0]
    torch.testing.assert_close(rows.acts[rows.seq == 5], one[1:], rtol=1e-5, atol=1e-5)


def test_cache_resume_with_budgets_off_the_batch_size_matches_a_fresh_pass(tiny, tmp_path):
    """Budgets that cut a forward batch (44 rows each), smaller then larger, with a killed run between:
    every row of the resumed cache equals an uncached pass, bit for bit, with its true location."""
    cfg = StreamConfig(hook_point="blocks.1.hook_resid_post", batch_size=4, token_budget=401)
    fresh = Rows.cat(list(raw_activations(tiny, _sequences(60)(), cfg, progress=False)))
    _assert_same_rows(_cached(tiny, tmp_path, 150), fresh[:150])
    killed = cached_activations(tiny, _sequences(60), replace(cfg, token_budget=333),
                                ShardCache(tmp_path, {"test": 1}, 50), progress=False)
    for _ in range(4):   # the 176 cached rows (two shards), then two fresh batches of 44; then "crash"
        next(killed)
    killed.close()
    manifest = ShardCache(tmp_path, {"test": 1}).manifest()
    assert manifest["sequences_done"] == 4 * 6 and manifest["rows"] == 44 * 6 and not manifest["complete"]
    _assert_same_rows(_cached(tiny, tmp_path, 401), fresh)
    _assert_same_rows(_cached(tiny, tmp_path, 401, sequences=lambda: iter(())), fresh)  # from disk, no model run
    _assert_same_rows(_cached(tiny, tmp_path, 77, sequences=lambda: iter(())), fresh[:77])


def test_cache_runs_to_the_end_of_the_sequences(tiny, tmp_path):
    everything = _cached(tiny, tmp_path, 10_000, sequences=_sequences(9))
    assert len(everything) == 9 * 11 and ShardCache(tmp_path, {"test": 1}).manifest()["complete"]
    _assert_same_rows(_cached(tiny, tmp_path, 10_000, sequences=lambda: iter(())), everything)


def test_cache_of_an_older_format_is_rebuilt(tiny, tmp_path, capsys):
    cache = ShardCache(tmp_path, {"test": 1}, 50)
    cache.dir.mkdir(parents=True)
    save_file({"acts": torch.zeros(44, 64)}, cache.dir / "shard_00000.safetensors")
    cache.manifest_path.write_text(json.dumps({"key": {"test": 1}, "shards": [{"file": "shard_00000.safetensors",
                                               "rows": 44}], "batches_done": 1, "rows": 44, "complete": False}))
    cfg = StreamConfig(hook_point="blocks.1.hook_resid_post", batch_size=4, token_budget=100)
    fresh = Rows.cat(list(raw_activations(tiny, _sequences(60)(), cfg, progress=False)))
    _assert_same_rows(_cached(tiny, tmp_path, 100), fresh)
    assert "has format 1" in capsys.readouterr().out and cache.manifest()["format"] == CACHE_FORMAT


def test_shard_cache_refuses_a_second_writer(tiny, tmp_path):
    import fcntl

    cfg = StreamConfig(hook_point="blocks.1.hook_resid_post", batch_size=4, token_budget=100)
    cache = ShardCache(tmp_path, {"test": 2}, shard_rows=50)
    cache.dir.mkdir(parents=True)
    with open(cache.dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)   # as another collecting process would
        with pytest.raises(RuntimeError, match="being written by another process"):
            list(cached_activations(tiny, _sequences(20), cfg, cache, progress=False))
    assert len(list(cached_activations(tiny, _sequences(20), cfg, cache, progress=False))) > 0
