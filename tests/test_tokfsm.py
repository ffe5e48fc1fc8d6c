import math

import pytest
import torch

from workbench.tokfsm import (
    BOS,
    FSM,
    TokFSMModelConfig,
    TokFSMTrainConfig,
    decode_states,
    make_fsm,
    make_model,
    save_model,
    state_tokens,
    tokenizer,
    train,
    trajectories,
    transition_accuracy,
)

SMALL = TokFSMModelConfig(max_positions=32)  # the paper's size; short context keeps the tests fast


def _chi_square(counts: torch.Tensor) -> float:
    expected = counts.sum() / len(counts)
    return (((counts - expected) ** 2) / expected).sum().item()


def test_make_fsm_is_seeded_with_distinct_successors():
    fsm = make_fsm(100, 10, seed=0)
    assert fsm.successors.shape == (100, 10) and fsm.successors.dtype == torch.int64
    assert all(len(set(row.tolist())) == 10 for row in fsm.successors)
    assert torch.equal(fsm.successors, make_fsm(100, 10, seed=0).successors)
    assert not torch.equal(fsm.successors, make_fsm(100, 10, seed=1).successors)
    with pytest.raises(ValueError, match="distinct"):
        FSM(torch.tensor([[1, 1], [0, 1]]))
    with pytest.raises(ValueError):
        make_fsm(101, 10)


def test_trajectories_follow_the_table_and_start_uniformly():
    fsm = make_fsm()
    n = 20_000
    tokens = trajectories(fsm, n, 3, torch.Generator().manual_seed(0))
    assert tokens.shape == (n, 7) and (tokens[:, 0] == BOS).all() and (tokens[:, 1:] < 10).all()
    states = tokens[:, 1::2] * 10 + tokens[:, 2::2]  # by hand, not through decode_states
    table = [set(row.tolist()) for row in fsm.successors]
    pairs = torch.stack([states[:, :-1], states[:, 1:]], dim=-1).reshape(-1, 2).tolist()
    assert all(b in table[a] for a, b in pairs)
    # Chi-square bounds at mean + 5 sd (p ~ 1e-4 for a correct sampler; seeded, so fixed anyway).
    starts = torch.bincount(states[:, 0], minlength=100).float()
    assert _chi_square(starts) < 99 + 5 * math.sqrt(2 * 99)
    picked = (fsm.successors[states[:, :-1]] == states[:, 1:, None]).int().argmax(-1)  # which of the 10
    assert _chi_square(torch.bincount(picked.flatten(), minlength=10).float()) < 9 + 5 * math.sqrt(2 * 9)


def test_decode_inverts_encode():
    assert state_tokens(torch.tensor([7, 42, 99, 0])).tolist() == [0, 7, 4, 2, 9, 9, 0, 0]
    states = torch.randint(100, (5, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(decode_states(state_tokens(states)), states)
    assert decode_states(torch.tensor([0, 7, BOS, 3, 4, BOS])).tolist() == [7, -1, -1]
    with pytest.raises(ValueError, match="even"):
        decode_states(torch.tensor([0, 7, 1]))


def test_is_transition_reads_the_table():
    fsm = FSM(torch.tensor([[1, 2], [0, 2], [2, 0]]))
    a = torch.tensor([0, 0, 0, 1, 2, 2, -1, 0])
    b = torch.tensor([1, 2, 0, 1, 2, 1, 0, -1])
    assert fsm.is_transition(a, b).tolist() == [True, True, False, False, True, False, False, False]


def test_tokenizer_round_trips(tmp_path):
    tok = tokenizer(tmp_path / "tok")
    assert len(tok) == 11 and tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == BOS
    assert tok.convert_ids_to_tokens(list(range(11))) == [str(d) for d in range(10)] + ["<|endoftext|>"]
    seq = trajectories(make_fsm(), 1, 16, torch.Generator().manual_seed(0))[0]
    text = tok.decode(seq[1:].tolist())
    assert len(text) == 32 and text.isdigit()
    assert tok(text, add_special_tokens=False)["input_ids"] == seq[1:].tolist()
    assert tok.decode(seq.tolist()) == "<|endoftext|>" + text


def _oracle(fsm: FSM, second_digit_bos: bool = False):
    """Logits putting all mass on digits that continue a valid transition from the last state, or
    (second_digit_bos) on any digit then BOS in place of every second digit; only the last position
    matters."""
    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        logits = torch.zeros(b, t, 11)
        logits[:, -1] = -math.inf
        for i, row in enumerate(tokens.tolist()):
            first = (t - 1) % 2 == 0  # BOS + whole states: the next token is a state's first digit
            if second_digit_bos:
                allowed = set(range(10)) if first else {BOS}
            elif first:
                allowed = {s // 10 for s in fsm.successors[row[-2] * 10 + row[-1]].tolist()}
            else:
                allowed = {s % 10 for s in fsm.successors[row[-3] * 10 + row[-2]].tolist() if s // 10 == row[-1]}
            logits[i, -1, sorted(allowed)] = 0.0
        return logits
    return logits_fn


def test_transition_accuracy_oracles():
    fsm = make_fsm()
    valid = transition_accuracy(_oracle(fsm), fsm, 40, 8, torch.Generator().manual_seed(0))
    assert valid == {"transition_accuracy": 1.0, "first_transition_accuracy": 1.0}
    # A BOS where a digit belongs is no state: both its transitions are invalid.
    broken = transition_accuracy(_oracle(fsm, second_digit_bos=True), fsm, 40, 8, torch.Generator().manual_seed(0))
    assert broken == {"transition_accuracy": 0.0, "first_transition_accuracy": 0.0}
    # Uniform over the 10 digits twice = uniform over the 100 states: a transition is valid with
    # probability 10 / 100. 300 sequences x 9 transitions: sd sqrt(0.09 / 2700) = 0.006 overall
    # (tolerance 0.03 = 5 sd), sd sqrt(0.09 / 300) = 0.017 for the first (tolerance 0.085 = 5 sd).
    uniform = torch.zeros(11)
    uniform[BOS] = -math.inf
    result = transition_accuracy(lambda tokens: uniform.expand(*tokens.shape, 11), fsm, 300, 10,
                                 torch.Generator().manual_seed(0))
    assert abs(result["transition_accuracy"] - 0.1) < 0.03, result
    assert abs(result["first_transition_accuracy"] - 0.1) < 0.085, result
    with pytest.raises(ValueError):
        transition_accuracy(_oracle(fsm), fsm, 4, 1, torch.Generator())


def test_configs_validate():
    with pytest.raises(ValueError, match="even"):
        TokFSMModelConfig(d_model=130, n_heads=4)
    with pytest.raises(ValueError, match="lr"):
        TokFSMTrainConfig(lr=0)
    with pytest.raises(ValueError, match="batch"):
        TokFSMTrainConfig(batch=0)
    model = make_model(TokFSMModelConfig(max_positions=16), seed=0)
    with pytest.raises(ValueError, match="positions"):
        train(model, make_fsm(), TokFSMTrainConfig(steps=1, n_states_per_seq=8))  # 17 tokens


def test_short_training_lowers_the_loss_deterministically():
    fsm = make_fsm()
    cfg = TokFSMTrainConfig(steps=30, batch=8, n_states_per_seq=8, lr=3e-3, seed=0)
    seen = []
    losses = train(make_model(SMALL, seed=0), fsm, cfg, on_step=lambda step, loss: seen.append((step, loss)))
    assert seen == list(enumerate(losses, start=1))
    # Untrained: ~ln 11 = 2.40 per token. Learning "digits, never BOS" gives ln 10 = 2.30 within a
    # few dozen steps; the FSM's structure (floor (ln 100 + 7 ln 10) / 16 = 1.30 for 8 states) takes
    # hundreds, too many for a unit test.
    assert losses[0] > 2.37 and sum(losses[-5:]) / 5 < 2.33, losses
    assert train(make_model(SMALL, seed=0), fsm, cfg) == losses
    assert train(make_model(SMALL, seed=0), fsm, TokFSMTrainConfig(**{**cfg.__dict__, "seed": 1})) != losses


def test_saved_model_loads_into_transformer_lens_with_equal_logits(tmp_path):
    from workbench.models import load_model

    model = make_model(SMALL, seed=0)
    with torch.no_grad():  # larger weights than the initialisation's, so the logits are not all ~0
        for p in model.parameters():
            p.mul_(3.0)
    folder = save_model(model, tmp_path / "tokfsm-model")
    loaded = load_model(str(folder))
    tokens = trajectories(make_fsm(), 4, 15, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(tokens).logits
        assert expected.std() > 0.1
        torch.testing.assert_close(loaded.model(tokens), expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(loaded.hf(tokens).logits, expected, rtol=0, atol=1e-6)
    assert loaded.model.to_tokens("0712").tolist() == [[BOS, 0, 7, 1, 2]]
    assert loaded.model.cfg.n_ctx == 32
    with pytest.raises(ValueError, match="llama"):
        save_model(model, tmp_path / "my-llama")
