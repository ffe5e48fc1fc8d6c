"""The trainer: schedules by hand, one step in isolation, real runs on synthetic sparse data,
and exact resume after an interruption."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import saes
from saes import registry
from saes.checkpoint import latest_checkpoint
from saes.training import StepCallback, TrainConfig, Trainer, lr_at, sparsity_scale_at
from workbench.metrics import fvu


def test_lr_schedule_by_hand():
    cfg = TrainConfig(total_steps=14, lr=1.0, warmup_steps=4, min_lr_fraction=0.1)
    assert [lr_at(cfg, s, 14) for s in (0, 1, 3)] == pytest.approx([0.25, 0.5, 1.0])
    assert lr_at(cfg, 4, 14) == pytest.approx(1.0)     # cosine starts at the peak
    assert lr_at(cfg, 9, 14) == pytest.approx(0.55)    # halfway: 0.1 + 0.9 * 0.5
    assert lr_at(cfg, 14, 14) == pytest.approx(0.1)    # ends at min_lr_fraction * lr
    flat = dataclasses.replace(cfg, lr_decay="constant")
    assert lr_at(flat, 0, 14) == pytest.approx(0.25) and lr_at(flat, 13, 14) == pytest.approx(1.0)


def test_sparsity_warmup_by_hand():
    cfg = TrainConfig(total_steps=10, sparsity_warmup_steps=4)
    assert [sparsity_scale_at(cfg, s) for s in (0, 1, 3, 9)] == pytest.approx([0.25, 0.5, 1.0, 1.0])
    assert sparsity_scale_at(TrainConfig(total_steps=10), 0) == 1.0


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "exactly one of total_steps and total_tokens"),
    ({"total_steps": 5, "total_tokens": 5}, "exactly one"),
    ({"total_steps": 0}, "total_steps must be positive"),
    ({"total_steps": 5, "lr": 0.0}, "lr must be positive"),
    ({"total_steps": 5, "adam_beta2": 1.0}, "betas"),
    ({"total_steps": 5, "lr_decay": "linear"}, "lr_decay"),
    ({"total_steps": 5, "warmup_steps": -1}, "warmup_steps"),
    ({"total_steps": 5, "checkpoint_every": 2}, "checkpoint_every needs checkpoint_dir"),
])
def test_train_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields).check_run()


class Recorder(StepCallback):
    """Owns b_enc (as GBA's bias adaptation will) and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, tuple[int, ...]]] = []

    def owned_parameters(self) -> tuple[str, ...]:
        return ("b_enc",)

    def on_step(self, step, sae, batch, code) -> None:
        self.calls.append((step, batch.shape[0], tuple(code.indices.shape)))


def test_one_step_in_isolation(sparse_data):
    sae = saes.create("topk", d_in=32, d_sae=128, k=4)
    callback = Recorder()
    trainer = Trainer(sae, TrainConfig(total_steps=10, progress_bar=False), [callback])
    x = sparse_data.batches(1, batch_size=64)[0]
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    out = trainer.step(x)
    assert out.loss.ndim == 0 and set(out.losses) == {"mse"}
    assert callback.calls == [(1, 64, (64, 4))]
    assert torch.equal(sae.b_enc, before["b_enc"])  # owned by the callback: the optimizer skips it
    assert not torch.equal(sae.W_enc, before["W_enc"]) and not torch.equal(sae.W_dec, before["W_dec"])
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(128), atol=1e-6)
    fired = torch.zeros(128, dtype=torch.bool)
    fired[out.code.indices[out.code.values > 0]] = True
    assert torch.equal(trainer.state.tokens_since_fired == 0, fired)
    assert (trainer.state.tokens_since_fired[~fired] == 64).all()
    assert (trainer.state.step, trainer.state.tokens) == (1, 64)


def test_unknown_owned_parameter_is_refused():
    class Bad(StepCallback):
        def owned_parameters(self):
            return ("b_gate",)

    with pytest.raises(ValueError, match="b_gate"):
        Trainer(saes.create("topk", d_in=8, d_sae=64, k=4), TrainConfig(total_steps=1), [Bad()])


def test_auxk_reaches_dead_latents(sparse_data):
    sae = saes.create("topk", d_in=32, d_sae=128, k=4, aux_k=16)
    trainer = Trainer(sae, TrainConfig(total_steps=10, dead_after_tokens=100, progress_bar=False))
    dead = torch.arange(64, 128)
    trainer.state.tokens_since_fired[dead] = 1000
    x = sparse_data.batches(1, batch_size=64)[0]
    out = sae.training_loss(x, trainer.dead_mask())
    assert out.losses["auxk"] > 0
    out.loss.backward()
    assert sae.W_enc.grad[:, dead].abs().sum() > 0


@pytest.mark.parametrize("bad_index", [0, 2])
def test_nan_batch_is_refused_before_any_update(sparse_data, bad_index):
    sae = saes.create("topk", d_in=32, d_sae=128, k=4)
    batches = sparse_data.batches(3, batch_size=32)
    batches[bad_index] = batches[bad_index].clone()
    batches[bad_index][5, 3] = float("nan")
    trainer = Trainer(sae, TrainConfig(total_steps=10, progress_bar=False))
    trainer.fit(batches[:bad_index])
    before = [p.detach().clone() for p in sae.parameters()]
    with pytest.raises(ValueError, match=f"batch {bad_index} of the activation stream contains NaN"):
        trainer.fit(batches, skip_seen=True)
    assert all(torch.equal(a, b) for a, b in zip(before, sae.parameters(), strict=True))
    assert trainer.state.step == bad_index


def test_total_tokens_becomes_steps(sparse_data):
    sae = saes.create("topk", d_in=32, d_sae=128, k=4)
    trainer = Trainer(sae, TrainConfig(total_tokens=1000, log_every=1, progress_bar=False))
    history = trainer.fit(sparse_data.batches(10, batch_size=256))
    assert trainer.state.total_steps == 4 and trainer.state.step == 4 and len(history) == 4


@pytest.mark.parametrize("name", registry.names(fit="gradient"))
def test_every_architecture_learns(sparse_data, name):
    sae = saes.create(name, d_in=32, d_sae=128)
    trainer = Trainer(sae, TrainConfig(total_steps=60, lr=3e-3, log_every=20, progress_bar=False))
    history = trainer.fit(sparse_data.batches(60, batch_size=128))
    assert history[-1]["fvu"] < 0.7 * history[0]["fvu"]
    assert {"step", "tokens", "lr", "loss", "mse", "l0", "fvu", "dead_fraction", "dense_fraction"} <= set(history[-1])


def test_topk_recovers_synthetic_sparse_data(sparse_data):
    """128 true features in 32 dims, 4 active per token: a k=4 TopK SAE reaches FVU < 0.2."""
    sae = saes.create("topk", d_in=32, d_sae=256, k=4)
    cfg = TrainConfig(total_steps=300, lr=4e-3, warmup_steps=20, dead_after_tokens=20_000, progress_bar=False)
    Trainer(sae, cfg).fit(sparse_data.batches(300, batch_size=256))
    held_out = sparse_data.batches(1, batch_size=2048, seed=99)[0]
    with torch.no_grad():
        assert fvu(held_out, sae(held_out)[0]).item() < 0.2
        best_cosine = (sparse_data.features @ sae.W_dec.T).max(dim=1).values
    assert (best_cosine > 0.9).float().mean() > 0.9  # and it found the true features


class Interrupted(Exception):
    pass


def crash_at(batches: list[torch.Tensor], index: int):
    for i, batch in enumerate(batches):
        if i == index:
            raise Interrupted
        yield batch


def test_resume_after_interruption_is_exact(sparse_data, tmp_path):
    batches = sparse_data.batches(20, batch_size=128)
    # wide enough that latents go dead within dead_after_tokens, so AuxK and the counters matter
    make = lambda: saes.create("topk", d_in=32, d_sae=1024, k=4)  # noqa: E731
    cfg = TrainConfig(total_steps=20, lr=3e-3, warmup_steps=3, dead_after_tokens=512, log_every=1,
                      progress_bar=False)

    straight = make()
    whole = Trainer(straight, cfg)
    history = whole.fit(batches)
    assert any(record.get("auxk", 0) > 0 for record in history[10:])

    resumable = dataclasses.replace(cfg, checkpoint_dir=str(tmp_path), checkpoint_every=10)
    with pytest.raises(Interrupted):
        Trainer(make(), resumable).fit(crash_at(batches, 13))
    assert latest_checkpoint(tmp_path).name == "step_000000010"

    resumed = make()
    trainer = Trainer(resumed, resumable)
    trainer.fit(batches)
    assert trainer.state.step == 20
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(whole.state.tokens_since_fired, trainer.state.tokens_since_fired)
    assert [r["step"] for r in trainer.history] == [r["step"] for r in history]  # the log survives too
    assert trainer.history[-1]["loss"] == pytest.approx(history[-1]["loss"])
    assert latest_checkpoint(tmp_path).name == "step_000000020"


def test_resume_refuses_a_different_config(sparse_data, tmp_path):
    cfg = TrainConfig(total_steps=4, checkpoint_dir=str(tmp_path), progress_bar=False)
    Trainer(saes.create("topk", d_in=32, d_sae=128, k=4), cfg).fit(sparse_data.batches(4, batch_size=32))
    changed = dataclasses.replace(cfg, lr=1e-2)
    with pytest.raises(ValueError, match="different lr"):
        Trainer(saes.create("topk", d_in=32, d_sae=128, k=4), changed).fit(sparse_data.batches(4, batch_size=32))
    with pytest.raises(ValueError, match="dictionary config"):
        Trainer(saes.create("topk", d_in=32, d_sae=128, k=8), cfg).fit(sparse_data.batches(4, batch_size=32))


def test_checkpoint_restores_the_rng(sparse_data, tmp_path):
    trainer = Trainer(saes.create("topk", d_in=32, d_sae=128, k=4),
                      TrainConfig(total_steps=2, checkpoint_dir=str(tmp_path), progress_bar=False))
    trainer.fit(sparse_data.batches(2, batch_size=32))
    after_save = torch.rand(4)
    trainer.load_checkpoint(latest_checkpoint(tmp_path))
    assert torch.equal(torch.rand(4), after_save)
