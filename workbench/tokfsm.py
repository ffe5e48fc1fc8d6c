"""TokFSM (Tamkin et al. 2023, codebook features): a random finite state machine written as digit
tokens, and the small transformer trained from scratch to continue its trajectories.

The FSM has `n_states` states (at most 100), each with `n_out` distinct random out-neighbours taken
with equal probability. A state is written as two base-10 digit tokens (state 7 -> "0", "7"), so a
model must combine two tokens to know the state and predict the next one digit at a time. Token
ids 0-9 are the digits and id 10 is BOS (also EOS and padding): a sequence is BOS then states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

N_DIGITS = 10
"""Token ids 0-9 are the digits 0-9."""
BOS = 10
"""The BOS token id (also EOS and padding)."""
VOCAB_SIZE = 11
BOS_TEXT = "<|endoftext|>"
MAX_STATES = N_DIGITS * N_DIGITS
"""Two base-10 digits write at most 100 states."""


@dataclass(eq=False)  # the generated __eq__ would compare tensors with ==, which is ambiguous
class FSM:
    """A finite state machine: from state s, the next state is one of `successors[s]`, uniformly."""

    successors: torch.Tensor
    """int64 `[n_states, n_out]`: each state's distinct out-neighbours (self-loops allowed)."""

    def __post_init__(self) -> None:
        s = self.successors
        if s.dtype != torch.int64 or s.ndim != 2 or s.numel() == 0:
            raise ValueError(f"successors must be a non-empty int64 [n_states, n_out] tensor, got {s.dtype} "
                             f"{tuple(s.shape)}")
        if s.shape[0] > MAX_STATES or s.shape[1] > s.shape[0]:
            raise ValueError(f"need n_out <= n_states <= {MAX_STATES}, got {tuple(s.shape)}")
        if s.min() < 0 or s.max() >= s.shape[0]:
            raise ValueError(f"successors must lie in [0, {s.shape[0]})")
        if (s.sort(dim=1).values.diff(dim=1) == 0).any():
            raise ValueError("a state's successors must be distinct")

    @property
    def n_states(self) -> int:
        return self.successors.shape[0]

    @property
    def n_out(self) -> int:
        return self.successors.shape[1]

    def is_transition(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Bool tensor (a and b broadcast): b is an out-neighbour of a. An entry outside [0, n_states)
        (e.g. decode_states' -1 for a non-state) is never a transition."""
        a, b = torch.broadcast_tensors(a, b)
        known = (a >= 0) & (a < self.n_states) & (b >= 0) & (b < self.n_states)
        rows = self.successors[torch.where(known, a, 0)]
        return known & (rows == b.unsqueeze(-1)).any(dim=-1)


def make_fsm(n_states: int = 100, n_out: int = 10, seed: int = 0) -> FSM:
    """A random FSM: each state's out-neighbours are `n_out` distinct states drawn uniformly."""
    if not 1 <= n_out <= n_states <= MAX_STATES:
        raise ValueError(f"need 1 <= n_out <= n_states <= {MAX_STATES}, got n_out={n_out}, n_states={n_states}")
    generator = torch.Generator().manual_seed(seed)
    return FSM(torch.stack([torch.randperm(n_states, generator=generator)[:n_out] for _ in range(n_states)]))


def state_tokens(states: torch.Tensor) -> torch.Tensor:
    """Token ids `[..., 2k]` of states `[..., k]`: each state as its tens digit then its units digit."""
    if states.numel() and (states.min() < 0 or states.max() >= MAX_STATES):
        raise ValueError(f"states must lie in [0, {MAX_STATES})")
    return torch.stack([states // N_DIGITS, states % N_DIGITS], dim=-1).flatten(-2).long()


def decode_states(tokens: torch.Tensor) -> torch.Tensor:
    """States `[..., k]` of token ids `[..., 2k]` (a sequence after its BOS): the inverse of
    state_tokens. A pair that is not two digits (e.g. a generated BOS) decodes to -1."""
    if tokens.shape[-1] % 2:
        raise ValueError(f"need an even number of tokens (two per state), got {tokens.shape[-1]}")
    pairs = tokens.long().unflatten(-1, (-1, 2))
    digits = ((pairs >= 0) & (pairs < N_DIGITS)).all(dim=-1)
    return torch.where(digits, pairs[..., 0] * N_DIGITS + pairs[..., 1], -1)


def trajectories(fsm: FSM, n: int, n_states_per_seq: int, generator: torch.Generator) -> torch.Tensor:
    """Token ids `[n, 1 + 2 * n_states_per_seq]`: BOS then a trajectory from a uniform start state,
    each next state uniform over the current state's out-neighbours."""
    if n < 1 or n_states_per_seq < 1:
        raise ValueError(f"n and n_states_per_seq must be positive, got {n}, {n_states_per_seq}")
    states = [torch.randint(fsm.n_states, (n,), generator=generator)]
    for _ in range(n_states_per_seq - 1):
        pick = torch.randint(fsm.n_out, (n,), generator=generator)
        states.append(fsm.successors[states[-1], pick])
    return torch.cat([torch.full((n, 1), BOS), state_tokens(torch.stack(states, dim=1))], dim=1)


def tokenizer(folder: str | Path) -> Any:
    """The TokFSM tokenizer (exactly the 11 ids above; digits split one per token, whitespace
    ignored), written to `folder` and loaded back from it: TransformerLens only accepts a tokenizer
    it can reload from its folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {str(d): d for d in range(N_DIGITS)} | {BOS_TEXT: BOS}
    tk = Tokenizer(models.WordLevel(vocab))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Digits(individual_digits=True)])
    tk.decoder = decoders.Fuse()  # "0712", not "0 7 1 2"
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=BOS_TEXT, eos_token=BOS_TEXT, pad_token=BOS_TEXT)
    fast.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


@dataclass
class TokFSMModelConfig:
    """The TokFSM transformer. The paper's is a GPT-NeoX of this size; this one is a Llama
    (RMSNorm, SwiGLU MLP, full rotary, sequential attention then MLP) because that is the
    architecture the workbench already loads into TransformerLens with checked logit parity."""

    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads (as many key/value heads: no grouped-query attention)."""
    d_mlp: int = 512
    """MLP hidden width."""
    max_positions: int = 256
    """Longest sequence, BOS included; TransformerLens sizes its context (n_ctx) from it."""

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "max_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model / n_heads must be an even integer (rotary pairs), got {self.d_model} / "
                             f"{self.n_heads}")


def make_model(cfg: TokFSMModelConfig, seed: int) -> Any:
    """A freshly initialised transformers LlamaForCausalLM (float32, eval mode); the weights depend
    only on `seed`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                         num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
                         intermediate_size=cfg.d_mlp, max_position_embeddings=cfg.max_positions,
                         rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},  # the paper's base
                         bos_token_id=BOS, eos_token_id=BOS, pad_token_id=BOS,
                         tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):  # seeds the initialisation without touching the global RNG
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


@dataclass
class TokFSMTrainConfig:
    """Next-token training from scratch, on fresh trajectories every step."""

    steps: int = 2000
    """Optimizer steps."""
    batch: int = 64
    """Trajectories per step."""
    n_states_per_seq: int = 64
    """States per trajectory (a sequence is 1 + 2 * n_states_per_seq tokens)."""
    lr: float = 1e-3
    """AdamW learning rate, constant (as in the paper's fsm_main.yaml: no warm-up, no decay)."""
    weight_decay: float = 0.0
    """AdamW weight decay (the paper's: 0, the Hugging Face Trainer default)."""
    seed: int = 0
    """Seeds the trajectories (so, with make_model's seed, the whole run)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "n_states_per_seq"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def train(model: Any, fsm: FSM, cfg: TokFSMTrainConfig, progress: bool = False,
          on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train `model` (a transformers causal LM, in place) on next-token prediction; returns each
    step's mean loss per predicted token. Deterministic for the seeds on one machine.

    `on_step(step, loss)` runs after each optimizer step (step counts from 1), with the model in
    train mode (no dropout in a Llama): e.g. to evaluate and keep the best checkpoint, as the paper
    picks its checkpoint by transition accuracy.
    """
    length = 1 + 2 * cfg.n_states_per_seq
    if length > model.config.max_position_embeddings:
        raise ValueError(f"sequences of {length} tokens exceed the model's {model.config.max_position_embeddings} "
                         "positions")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), disable=not progress, desc="tokfsm")
    for step in bar:
        tokens = trajectories(fsm, cfg.batch, cfg.n_states_per_seq, generator).to(device)
        loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses


def transition_accuracy(logits_fn: Callable[[torch.Tensor], torch.Tensor], fsm: FSM, n: int, n_states_per_seq: int,
                        generator: torch.Generator, temperature: float = 1.0) -> dict[str, float]:
    """Sample `n` sequences from a model and score their transitions.

    Each sequence starts as BOS + a uniformly random start state; the model then samples (softmax of
    logits / temperature) tokens until the sequence holds `n_states_per_seq` states. Returns
    `transition_accuracy`, the share of valid transitions among all consecutive state pairs, and
    `first_transition_accuracy`, the share among the pairs (start state, first generated state).
    A generated pair of tokens that is not two digits is not a state: both transitions it takes
    part in count as invalid. (The paper's evaluation samples the start state from the model too;
    giving it makes the first transition's starts uniform over the states.)

    `logits_fn` maps token ids `[b, t]` (on the CPU) to logits `[b, t, vocab]`, so an HF model
    (`lambda t: hf(t).logits`), a TransformerLens model or one running with hooks all fit. It is
    called once per generated token on the whole prefix (no KV cache), under torch.no_grad.
    """
    if n < 1 or n_states_per_seq < 2:
        raise ValueError(f"need n >= 1 and n_states_per_seq >= 2, got {n}, {n_states_per_seq}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    start = torch.randint(fsm.n_states, (n, 1), generator=generator)
    tokens = torch.cat([torch.full((n, 1), BOS), state_tokens(start)], dim=1)
    with torch.no_grad():
        for _ in range(2 * (n_states_per_seq - 1)):
            logits = logits_fn(tokens)[:, -1].float().cpu()
            sampled = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)
            tokens = torch.cat([tokens, sampled], dim=1)
    states = decode_states(tokens[:, 1:])
    valid = fsm.is_transition(states[:, :-1], states[:, 1:]).float()
    return {"transition_accuracy": valid.mean().item(), "first_transition_accuracy": valid[:, 0].mean().item()}


def save_model(model: Any, folder: str | Path) -> Path:
    """Write `model` and the tokenizer as a Hugging Face folder that `workbench.models.load_model`
    loads (into TransformerLens, HF model kept as `.hf`). A path containing "llama" or "gemma" is
    refused: TransformerLens picks the architecture from those names in the path."""
    folder = Path(folder)
    guessed = [name for name in ("llama", "gemma") if name in str(folder.resolve()).lower()]
    if guessed:
        raise ValueError(f"{folder}: TransformerLens would take the architecture from {guessed[0]!r} in the path "
                         "and fail to load it; choose a path without it")
    model.save_pretrained(folder)
    tokenizer(folder)
    return folder
