import pytest
import torch

from workbench.activations import MixingBuffer, ShardCache, StreamConfig, cached_activations, hook_activations

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


def test_shard_cache_resumes_after_interruption(tiny, tmp_path):
    cfg = StreamConfig(hook_point="blocks.1.hook_resid_post", batch_size=4, token_budget=400)
    whole = torch.cat(list(cached_activations(tiny, _sequences(60), cfg, None, progress=False)))
    cache = ShardCache(tmp_path, {"test": 1}, shard_rows=50)
    partial = cached_activations(tiny, _sequences(60), cfg, cache, progress=False)
    for _ in range(5):  # four forward batches of 44 rows -> three shards flushed, then "crash"
        next(partial)
    partial.close()
    assert 0 < cache.manifest()["rows"] < 400 and not cache.manifest()["complete"]
    resumed = torch.cat(list(cached_activations(tiny, _sequences(60), cfg, ShardCache(tmp_path, {"test": 1}, 50),
                                                progress=False)))
    torch.testing.assert_close(resumed, whole)
    assert ShardCache(tmp_path, {"test": 1}).manifest()["rows"] == 400
    again = torch.cat(list(cached_activations(tiny, lambda: iter(()), cfg, ShardCache(tmp_path, {"test": 1}),
                                              progress=False)))
    torch.testing.assert_close(again, whole)  # served from disk, model not needed
    smaller = StreamConfig(hook_point="blocks.1.hook_resid_post", batch_size=4, token_budget=150)
    prefix = torch.cat(list(cached_activations(tiny, lambda: iter(()), smaller, ShardCache(tmp_path, {"test": 1}),
                                               progress=False)))
    torch.testing.assert_close(prefix, whole[:150])  # one cache serves every smaller budget


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
