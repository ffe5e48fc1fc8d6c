"""Live model calls for the prompt inspector and the steering playground.

One model and a few dictionaries are loaded lazily and kept. All use of the model goes through
one lock: gradio runs callbacks in threads, and an intervention's hooks live on the shared model,
so a steered generation must not overlap another view's forward pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import NamedTuple, cast

import pandas as pd
import torch

from saes.base import Dictionary
from workbench import queries
from workbench.activations import hook_activations, merge_heads
from workbench.generation import greedy_stream, prompt_tokens
from workbench.hooks import clamp, steer
from workbench.models import LoadedModel, load_model
from workbench.registered import load_dictionary
from workbench.store import Store
from workbench.token_rule import TokenRule

INTERVENTIONS: dict[str, Callable[..., AbstractContextManager[None]]] = {"steer": steer, "clamp": clamp}
"""Steering modes: `steer` adds strength x decoder direction; `clamp` sets the activation."""


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch with `n` threads inside the block.

    When a pipeline keeps the cores busy, torch's spinning worker threads collapse: one SmolLM2
    forward took 5.5 s with 2 threads and 0.3 s with 1 on the 2-core machine, so live calls
    default to 1 thread. Callers hold the model lock, so no other torch work overlaps.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Inspection(NamedTuple):
    tokens: list[str]
    """The prompt's tokens (BOS first)."""
    features: pd.DataFrame
    """pos, token, rank, feature, act: each token's strongest active features (none for some tokens)."""
    counted: list[bool]
    """Per token: does the dictionary's token rule count it (special tokens and massive-norm sinks
    do not; the strip's colour scale ignores them)."""
    chosen: list[float] | None = None
    """Per token, the activation of the feature asked for (`top_features(colour_by=...)`), if any."""


class Generation(NamedTuple):
    baseline: str
    """Greedy continuation of the unchanged model."""
    intervened: str
    """Greedy continuation with the intervention's hooks in place."""


class LiveModels:
    """The app's model and dictionaries, loaded on first use."""

    def __init__(self, store: Store, model_name: str, threads: int = 1, max_dictionaries: int = 4,
                 model: LoadedModel | None = None):
        """`threads`: torch threads for a live call (see `_torch_threads`). `model`: an already loaded
        `model_name` (a notebook's or a test's), else it is loaded on first use."""
        self.store = store
        self.model_name = model_name
        self.threads = threads
        self.max_dictionaries = max_dictionaries
        self._lock = threading.RLock()
        self._model = model
        self._dicts: OrderedDict[str, Dictionary] = OrderedDict()

    def model(self) -> LoadedModel:
        with self._lock:
            if self._model is None:
                self._model = load_model(self.model_name, store=self.store)
            return self._model

    def dictionary(self, dict_id: str) -> Dictionary:
        """The saved dictionary behind a store row (a small LRU, since SmolLM2-sized ones are ~10 MB+)."""
        with self._lock:
            if dict_id not in self._dicts:
                self._dicts[dict_id] = load_dictionary(queries.dictionary_row(self.store, dict_id)).eval()
                while len(self._dicts) > self.max_dictionaries:
                    self._dicts.popitem(last=False)
            self._dicts.move_to_end(dict_id)
            return self._dicts[dict_id]

    def tokens(self, text: str, chat: bool = False) -> torch.Tensor:
        """Token ids [1, T] of `text` (BOS first), or of it as a user turn in the chat template."""
        return prompt_tokens(self.model(), text, chat)

    @torch.inference_mode()
    def top_features(self, text: str, dict_id: str, per_token: int = 3, colour_by: int | None = None) -> Inspection:
        """The prompt's tokens and, per token, its strongest `per_token` active features (and feature
        `colour_by`'s activation at every token, when given)."""
        with self._lock, _torch_threads(self.threads):
            loaded, sae = self.model(), self.dictionary(dict_id)
            if colour_by is not None and not 0 <= colour_by < sae.d_sae:
                raise ValueError(f"feature {colour_by} is out of range: {dict_id} has features 0..{sae.d_sae - 1}")
            tokens = self.tokens(text)
            acts = merge_heads(hook_activations(loaded, sae.hook_point, tokens)[0], sae.hook_point)  # [T, d_in]
            code = sae.encode(acts)
            counted = self.token_rule(dict_id).ordinary(acts, tokens[0], loaded.tokenizer.all_special_ids)
            strs = cast(list[str], loaded.model.to_str_tokens(tokens[0]))   # one sequence in, one list out
        values, indices = code.values[:, :per_token], code.indices[:, :per_token]
        rows = [(pos, strs[pos], rank + 1, int(indices[pos, rank]), float(values[pos, rank]))
                for pos in range(len(strs)) for rank in range(values.shape[1]) if values[pos, rank] > 0]
        chosen = None if colour_by is None else code.values.where(code.indices == colour_by, 0.0).sum(-1).tolist()
        return Inspection(strs, pd.DataFrame(rows, columns=["pos", "token", "rank", "feature", "act"]),
                          counted.tolist(), chosen)

    def token_rule(self, dict_id: str) -> TokenRule:
        """The rule the dictionary was fitted with; for display, dictionaries without one (fitted
        before the rule, or registered by hand) get the default, so BOS and sinks never set the
        inspector's colour scale."""
        row = queries.dictionary_row(self.store, dict_id)
        stored = queries.run_config(self.store, row["run_id"]).get("token_rule")
        return TokenRule(**stored) if stored is not None else TokenRule()

    def generate(self, prompt: str, dict_id: str, mode: str, strengths: Mapping[int, float],
                 max_new_tokens: int = 32, chat: bool = True) -> Generation:
        """Greedy continuations of `prompt` without and with the intervention."""
        last = deque(self.generate_stream(prompt, dict_id, mode, strengths, max_new_tokens, chat), maxlen=1)
        return last[0] if last else Generation("", "")

    def generate_stream(self, prompt: str, dict_id: str, mode: str, strengths: Mapping[int, float],
                        max_new_tokens: int = 32, chat: bool = True) -> Iterator[Generation]:
        """Both continuations as they grow, one token of one of them per item, taking turns (bad input
        is refused before the first). The model lock is held for one token at a time, with the
        intervention's hooks in place only for the intervened continuation's, so another view may
        run between tokens."""
        if mode not in INTERVENTIONS:
            raise ValueError(f"mode must be one of {sorted(INTERVENTIONS)}, got {mode!r}")
        with self._lock:
            loaded, sae = self.model(), self.dictionary(dict_id)
            tokens = self.tokens(prompt, chat)
        bad = [f for f in strengths if not 0 <= f < sae.d_sae]
        if bad:
            raise ValueError(f"features {bad} are out of range: {dict_id} has features 0..{sae.d_sae - 1}")
        streams = {"baseline": (greedy_stream(loaded, tokens, max_new_tokens), nullcontext),
                   "intervened": (greedy_stream(loaded, tokens, max_new_tokens),
                                  lambda: INTERVENTIONS[mode](loaded.model, sae, strengths))}
        out = Generation("", "")
        while streams:
            for name, (stream, hooks) in list(streams.items()):
                with self._lock, _torch_threads(self.threads), hooks():
                    text = next(stream, None)
                if text is None:
                    del streams[name]
                    continue
                out = out._replace(**{name: text})
                yield out
