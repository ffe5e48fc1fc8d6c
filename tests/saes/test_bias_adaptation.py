"""Group bias adaptation: the rule on hand-built statistics, the callback inside the trainer
(biases leave the optimizer, move only at updates, stay in range, resume exactly), its config."""

from __future__ import annotations

import pytest
import torch

import saes
from saes.bias_adaptation import GBAConfig, GroupBiasAdaptation, adapted_biases
from saes.training import TrainConfig, Trainer


def test_rule_on_hand_built_statistics():
    # Two groups of two: targets 0.1 and 0.01.
    target = GBAConfig(groups=2, high_freq=0.1, low_freq=0.01).target_frequencies(4)
    assert target.tolist() == pytest.approx([0.1, 0.1, 0.01, 0.01])
    bias = torch.tensor([0.0, -0.5, -0.5, -0.99])
    freq = torch.tensor([0.5, 0.05, 0.0, 0.02])
    peak = torch.tensor([2.0, 1.0, 0.0, 4.0])
    new = adapted_biases(bias, freq, peak, target, groups=2, gamma=0.1, dead_freq=1e-6, floor=1.0)
    # 0: too frequent, lowered by gamma * its peak; 1: within target, unchanged; 2: silent, raised by
    # gamma * the mean peak of its group's firing latents (only latent 3: 4.0); 3: too frequent,
    # lowered by 0.4 and clamped at the floor.
    assert new.tolist() == pytest.approx([-0.2, -0.5, -0.1, -1.0])
    raised_past_zero = adapted_biases(torch.tensor([0.0, 0.0, -0.2, 0.0]), freq, peak, target, 2, 0.1, 1e-6, 1.0)
    assert raised_past_zero[2] == 0.0          # ceiling 0


def test_single_group_is_ba():
    cfg = GBAConfig(groups=1, high_freq=0.05)
    assert cfg.target_frequencies(6).tolist() == pytest.approx([0.05] * 6)
    ten = GBAConfig(groups=10).target_frequencies(10)
    assert ten[0] == pytest.approx(0.1) and ten[-1] == pytest.approx(1e-3)
    assert (ten[:-1] / ten[1:]).tolist() == pytest.approx([10 ** (2 / 9)] * 9)   # geometric


@pytest.mark.parametrize(("fields", "message"), [
    ({"high_freq": 1.0}, "high_freq must be in"), ({"low_freq": 0.0}, "low_freq must be in"),
    ({"high_freq": 0.01, "low_freq": 0.1}, "must not exceed"), ({"groups": 0}, "groups"),
    ({"gamma": 0.0}, "gamma"),
])
def test_config_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        GBAConfig(**fields)


def test_does_not_apply_to_topk_or_uneven_groups():
    with pytest.raises(ValueError, match="'topk' does not fire by an encoder-bias threshold"):
        GBAConfig().check_applies("topk", 100)
    with pytest.raises(ValueError, match="groups=3 does not divide the dictionary's 64 latents"):
        GBAConfig(groups=3).check_applies("relu", 64)


def _trainer(sparse_data, tmp_path=None, steps=12, **extra) -> tuple[Trainer, GroupBiasAdaptation, list]:
    sae = saes.create("relu", d_in=32, d_sae=64, l1_coefficient=0.0, seed=0)
    gba = GroupBiasAdaptation(GBAConfig(groups=4, high_freq=0.2, low_freq=0.02, gamma=0.05, update_every=3), sae)
    folder = str(tmp_path) if tmp_path else None
    cfg = TrainConfig(total_steps=steps, lr=1e-2, progress_bar=False, checkpoint_dir=folder, **extra)
    return Trainer(sae, cfg, [gba]), gba, sparse_data.batches(steps, batch_size=128)


def test_callback_owns_the_biases(sparse_data):
    trainer, gba, batches = _trainer(sparse_data)
    assert all(p is not trainer.sae.b_enc for g in trainer.optimizer.param_groups for p in g["params"])
    seen = []
    for step, x in enumerate(batches, 1):
        if step == 1:
            trainer._start(x)
        before = trainer.sae.b_enc.detach().clone()
        trainer.step(x)
        moved = not torch.equal(before, trainer.sae.b_enc)
        seen.append(moved)
        assert step % 3 == 0 or not moved, f"bias moved at step {step}, between updates"
    assert all(seen[2::3]) and float(gba.floor) > 0
    assert (trainer.sae.b_enc <= 0).all() and (trainer.sae.b_enc >= -gba.floor).all()
    assert float(gba.tokens) == 0          # the window restarts after the last update (step 12)


def test_lowering_biases_makes_codes_sparser(sparse_data):
    trainer, _, batches = _trainer(sparse_data, steps=60, log_every=1)
    trainer.fit(batches)
    first, last = trainer.history[0]["l0"], trainer.history[-1]["l0"]
    assert last < first / 2, (first, last)   # zero biases fire ~half the latents; targets are 2-20%


def test_resume_with_the_callback_is_exact(sparse_data, tmp_path):
    straight, _, batches = _trainer(sparse_data, steps=12)
    straight.fit(batches)
    first, _, _ = _trainer(sparse_data, tmp_path, steps=12, checkpoint_every=4)
    first.fit(batches[:7])                  # interrupted after 7 steps (checkpoint at 4)
    resumed, gba, _ = _trainer(sparse_data, tmp_path, steps=12, checkpoint_every=4)
    resumed.fit(batches)
    assert torch.equal(resumed.sae.b_enc, straight.sae.b_enc)
    assert torch.allclose(resumed.sae.W_enc, straight.sae.W_enc)
