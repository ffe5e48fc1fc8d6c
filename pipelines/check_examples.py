"""`workbench check-examples`: recompute every stored feature example from its stored token ids.

For each document a dictionary's feature pass stored, run the model over the document's token ids
(as stored in `tokens`), encode the hook point's activations with the saved dictionary, and compare
each example's stored activation with the recomputed one at the example's (document, position).
This is the end-to-end check that feature pages, explainer prompts and scorers see the tokens
that really produced each activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

import saes
from workbench.activations import hook_activations, merge_heads
from workbench.models import LoadedModel
from workbench.registered import load_registered
from workbench.store import Store


@dataclass
class CheckExamplesConfig:
    """Check that a dictionary's stored examples reproduce from their stored tokens."""

    dict_id: str = ""
    """Dictionary id in the store."""
    rtol: float = 1e-3
    """Relative tolerance of an activation (float32 forward passes batched differently)."""
    atol: float = 1e-3
    """Absolute tolerance, as a fraction of the feature's largest stored activation."""
    forward_batch: int = 8
    """Documents per model forward pass."""

    def __post_init__(self) -> None:
        if not self.dict_id:
            raise ValueError("dict_id is required")
        if not (self.rtol >= 0 and self.atol >= 0):
            raise ValueError(f"rtol and atol must be >= 0, got {self.rtol}, {self.atol}")
        if self.forward_batch < 1:
            raise ValueError(f"forward_batch must be >= 1, got {self.forward_batch}")


def run(cfg: CheckExamplesConfig, store: Store, progress: bool = True) -> float:
    """Print and return the fraction of examples that reproduce; RuntimeError if any does not."""
    row, loaded, dictionary = load_registered(store, cfg.dict_id)
    checked = recompute_examples(store, cfg, loaded, dictionary, row["hook_point"], progress)
    if checked.empty:
        raise LookupError(f"dictionary {cfg.dict_id!r} has no stored feature examples (run `workbench features`)")
    ok = float(checked["ok"].mean())
    print(f"{int(checked['ok'].sum())}/{len(checked)} stored examples of {cfg.dict_id} reproduce their activation "
          f"at their recorded (document, position) ({100 * ok:.2f}%)")
    if ok < 1:
        bad = checked[~checked["ok"]].head(5)[["feature", "kind", "doc_id", "pos", "act", "recomputed"]]
        raise RuntimeError(f"{(~checked['ok']).sum()} examples do not reproduce, e.g.\n{bad.to_string(index=False)}")
    return ok


@torch.no_grad()
def recompute_examples(store: Store, cfg: CheckExamplesConfig, loaded: LoadedModel, sae: saes.Dictionary,
                       hook_point: str, progress: bool = False) -> pd.DataFrame:
    """Every stored example with its recomputed activation and whether the two agree."""
    examples = store.query("SELECT feature, kind, rank, doc_id, pos, act FROM feature_examples WHERE dict_id = ?",
                           [cfg.dict_id])
    docs = store.query("SELECT doc_id, list(token_id ORDER BY pos) AS ids FROM tokens WHERE doc_id IN "
                       "(SELECT DISTINCT doc_id FROM feature_examples WHERE dict_id = ?) GROUP BY doc_id",
                       [cfg.dict_id])
    recomputed = pd.Series(0.0, index=examples.index)
    by_doc = examples.groupby("doc_id").groups
    for start in tqdm(range(0, len(docs), cfg.forward_batch), desc="recompute examples", disable=not progress):
        chunk = docs.iloc[start: start + cfg.forward_batch]
        dense = _encode_documents(loaded, sae, hook_point, [list(ids) for ids in chunk["ids"]])
        for b, doc_id in enumerate(chunk["doc_id"]):
            index = by_doc[doc_id]
            pos = torch.tensor(examples.loc[index, "pos"].to_numpy())
            feature = torch.tensor(examples.loc[index, "feature"].to_numpy())
            recomputed[index] = dense[b, pos, feature].numpy()
    scale = examples.groupby("feature")["act"].transform("max")
    tolerance = cfg.atol * scale + cfg.rtol * examples["act"].abs()
    return examples.assign(recomputed=recomputed, ok=(recomputed - examples["act"]).abs() <= tolerance)


def _encode_documents(loaded: LoadedModel, sae: saes.Dictionary, hook_point: str,
                      docs: list[list[int]]) -> torch.Tensor:
    """[B, T_max, d_sae] feature activations of right-padded documents (padding never precedes a token)."""
    pad = loaded.tokenizer.pad_token_id or 0
    width = max(map(len, docs))
    ids = torch.tensor([d + [pad] * (width - len(d)) for d in docs])
    acts = merge_heads(hook_activations(loaded, hook_point, ids), hook_point)
    return sae.encode(acts.clone()).dense()   # clone: the CPU top-k kernel rejects inference tensors
