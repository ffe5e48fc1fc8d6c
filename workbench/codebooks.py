"""Codebooks (`saes/codebook.py`) inside a model: inserted at their hook points, patched, saved with
the model variant they were finetuned with.

Two insertions of the same bottleneck:
- TransformerLens (`insert`): the hook point is replaced by a `CodebookHookPoint`, which runs its
  hooks as any hook point does and then the codebook. So hooks at the codebook's hook point read
  (and may edit) the codebook's *input*, which is what the dictionary encodes, and the model
  continues with the codebook's output. Variants load this way (`attach_saved`), and everything that
  reads or steers a model (feature passes, the app) uses it.
- Hugging Face (`inserted_hf`): forward (pre-)hooks on the module `activations.hf_target` maps the
  hook point to, for the finetune (`pipelines/codebooks.py`), collecting each codebook's loss.
A variant with codebooks is loaded without its Hugging Face twin (`LoadedModel.hf` None), so no fast
path can bypass them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from saes.codebook import Codebook, Overrides
from saes.storage import load_dictionary
from workbench.activations import hf_target, merge_heads
from workbench.finetune import finetune

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from workbench.models import LoadedModel

CODEBOOKS_DIR = "codebooks"
"""Folder of a variant holding its codebooks, one saved dictionary per hook point."""


class CodebookHookPoint(HookPoint):
    """A hook point whose hooks see the codebook's input; its output is the codebook's."""

    def __init__(self, codebook: Codebook) -> None:
        super().__init__()
        self.codebook = codebook
        self.enabled = True

    def __call__(self, x: Tensor) -> Tensor:
        x = super().__call__(x)
        if not self.enabled:
            return x
        return self.codebook.bottleneck(merge_heads(x, self.codebook.hook_point)).output.reshape(x.shape)


def insert(model: HookedTransformer, codebooks: Sequence[Codebook]) -> None:
    """Put each codebook at its hook point of a TransformerLens model (ValueError for a hook point the
    model lacks or that has a codebook already)."""
    for codebook in codebooks:
        parent_name, _, leaf = codebook.hook_point.rpartition(".")
        current = model.hook_dict.get(codebook.hook_point)
        if current is None:
            raise ValueError(f"the model has no hook point {codebook.hook_point!r} for a codebook")
        if isinstance(current, CodebookHookPoint):
            raise ValueError(f"{codebook.hook_point} has a codebook already")
        setattr(model.get_submodule(parent_name), leaf, CodebookHookPoint(codebook))
    model.setup()


def codebooks_of(model: HookedTransformer) -> dict[str, Codebook]:
    """The codebooks inserted in `model`, by hook point."""
    return {name: hp.codebook for name, hp in model.hook_dict.items() if isinstance(hp, CodebookHookPoint)}


def codebook_at(model: HookedTransformer, hook_point: str) -> Codebook:
    """The codebook at `hook_point`; ValueError naming where the model has codebooks otherwise."""
    found = codebooks_of(model)
    if hook_point not in found:
        raise ValueError(f"the model has no codebook at {hook_point!r} (it was not finetuned with one there); "
                         f"its codebooks: {sorted(found) or 'none'}")
    return found[hook_point]


@contextmanager
def disabled(model: HookedTransformer) -> Iterator[None]:
    """The model without its codebooks inside the block (the hook points pass activations through)."""
    points = [hp for hp in model.hook_dict.values() if isinstance(hp, CodebookHookPoint)]
    for hp in points:
        hp.enabled = False
    try:
        yield
    finally:
        for hp in points:
            hp.enabled = True


@contextmanager
def patch_codes(model: HookedTransformer, hook_point: str, features: Sequence[int],
                positions: Sequence[int] | None = None) -> Iterator[None]:
    """Force the codebook at `hook_point` of a TransformerLens model to choose `features`; see `forced_codes`."""
    with forced_codes(codebook_at(model, hook_point), features, positions):
        yield


@contextmanager
def forced_codes(codebook: Codebook, features: Sequence[int], positions: Sequence[int] | None = None
                 ) -> Iterator[None]:
    """Force `codebook` to choose `features` (global code ids, at most k per group) at `positions` of
    every sequence (all positions if None), in forward passes and generation inside the block, in
    whichever model it is inserted (TransformerLens or Hugging Face); each group's other slots keep
    the model's own choices."""
    cfg = codebook.cfg
    wanted = torch.as_tensor(list(features), dtype=torch.long)
    if len(wanted) == 0 or wanted.min() < 0 or wanted.max() >= cfg.d_sae:
        raise ValueError(f"code ids must be in [0, {cfg.d_sae}) for the codebook at {codebook.hook_point}, got "
                         f"{list(features)}")
    forced: dict[int, Tensor] = {}
    for group in (wanted // cfg.codes).unique().tolist():
        forced[group] = (wanted[wanted // cfg.codes == group] % cfg.codes).unique()
        if len(forced[group]) > cfg.k:
            raise ValueError(f"{len(forced[group])} codes forced in group {group} at {codebook.hook_point}, which "
                             f"chooses only k={cfg.k} per token")
    where = None if positions is None else torch.as_tensor(list(positions), dtype=torch.long)
    codebook.override = Overrides(forced, where)
    try:
        yield
    finally:
        codebook.override = None


@torch.no_grad()
def code_ids(model: HookedTransformer, tokens: Tensor, hook_point: str) -> Tensor:
    """`[batch, pos, groups * k]` global code ids the codebook at `hook_point` chooses for `tokens`."""
    codebook = codebook_at(model, hook_point)
    _, cache = model.run_with_cache(tokens, names_filter=[hook_point], stop_at_layer=None)
    return codebook.encode(merge_heads(cache[hook_point], hook_point)).indices


class HFInsertion:
    """Codebooks hooked into a Hugging Face model; `losses` collects each forward's codebook terms,
    `ids` holds each codebook's global code ids of the last forward, by hook point."""

    def __init__(self, hf: torch.nn.Module, codebooks: Sequence[Codebook]) -> None:
        self.losses: list[Tensor] = []
        self.ids: dict[str, Tensor] = {}
        self.handles = []
        for codebook in codebooks:
            target = hf_target(hf, codebook.hook_point)
            if target is None:
                raise ValueError(f"cannot insert a codebook at {codebook.hook_point} in a Hugging Face model "
                                 "(supported: attn.hook_z, hook_mlp_out, hook_attn_out, hook_resid_pre/post, "
                                 "mlp.hook_post)")
            module, which = target
            if which == "input":
                self.handles.append(module.register_forward_pre_hook(self._pre_hook(codebook)))
            else:
                self.handles.append(module.register_forward_hook(self._post_hook(codebook)))

    def _run(self, codebook: Codebook, x: Tensor) -> Tensor:
        out = codebook.bottleneck(x)
        self.losses.append(out.loss)
        self.ids[codebook.hook_point] = codebook.local_to_global(out.ids).flatten(-2).detach()
        return out.output

    def _pre_hook(self, codebook: Codebook):
        return lambda module, args: (self._run(codebook, args[0]), *args[1:])

    def _post_hook(self, codebook: Codebook):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (self._run(codebook, output[0]), *output[1:])
            return self._run(codebook, output)
        return hook

    def take_loss(self) -> Tensor:
        """Sum of the codebook terms since the last call (0 if none)."""
        total = torch.stack(self.losses).sum() if self.losses else torch.zeros(())
        self.losses = []
        return total

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def inserted_hf(hf: torch.nn.Module, codebooks: Sequence[Codebook]) -> Iterator[HFInsertion]:
    insertion = HFInsertion(hf, codebooks)
    try:
        yield insertion
    finally:
        insertion.remove()


def finetune_with_codebooks(hf: torch.nn.Module, codebooks: Sequence[Codebook], blocks: Iterator[Tensor], steps: int,
                            batch: int, lr: float, generator: torch.Generator, train_model: bool = True,
                            progress: bool = True) -> float:
    """Finetune `hf` (or, with train_model false, only the codebooks) with the codebooks inserted; each
    codebook's `after_step` (its dead-code replacement, every `replace_after` steps) draws from
    `generator`. Returns the tokens per second."""
    hf.requires_grad_(train_model)
    parameters = [p for p in hf.parameters() if p.requires_grad] + [p for cb in codebooks for p in cb.parameters()]
    for cb in codebooks:
        cb.train()
    with inserted_hf(hf, codebooks) as insertion:
        result = finetune(hf, parameters, blocks, steps, batch, lr, extra_loss=insertion.take_loss,
                          after_step=lambda: [cb.after_step(generator) for cb in codebooks], progress=progress,
                          desc="codebooks")
    hf.requires_grad_(True)
    for cb in codebooks:
        cb.eval()
    return result.tokens_per_second


def save_codebooks(folder: Path, codebooks: Sequence[Codebook]) -> dict[str, Path]:
    """Save each codebook under `folder`/codebooks/<hook point>; returns the folders by hook point."""
    return {cb.hook_point: cb.save(folder / CODEBOOKS_DIR / cb.hook_point) for cb in codebooks}


def saved_codebooks(folder: Path) -> list[Codebook]:
    """The codebooks a variant folder holds (none for other models), checked as any saved dictionary."""
    root = folder / CODEBOOKS_DIR
    paths = sorted(root.iterdir()) if root.is_dir() else []
    return [cast(Codebook, load_dictionary(path, architecture=Codebook.architecture)) for path in paths]


def attach_saved(loaded: LoadedModel, folder: Path) -> LoadedModel:
    """Insert a variant's saved codebooks into its TransformerLens model and drop the HF twin."""
    codebooks = saved_codebooks(folder)
    if codebooks:
        insert(loaded.model, codebooks)
        loaded.model.eval()
        loaded.hf = None
    return loaded


def code_contrast(ids: Tensor, in_class: Tensor, d_sae: int) -> Tensor:
    """`[d_sae]`: each code's firing rate on tokens of a class minus its rate on the other tokens (ids
    `[tokens, slots]` global ids, in_class `[tokens]` bool)."""
    fired = torch.zeros(len(ids), d_sae).scatter_(1, ids, 1.0)
    return fired[in_class].mean(0) - fired[~in_class].mean(0)


def strongest_codes_by_group(difference: Tensor, codebook: Codebook) -> list[tuple[int, list[int]]]:
    """Per group of `codebook`: its k global code ids with the largest `difference` (`[d_sae]`, e.g.
    `code_contrast`), largest first; the groups ordered by the sum of those k values, largest first.
    Forcing a group's k codes overwrites all of its slots, as the paper's topic steering does."""
    cfg = codebook.cfg
    top = difference.reshape(cfg.groups, cfg.codes).topk(cfg.k, dim=-1)
    order = top.values.sum(-1).argsort(descending=True, stable=True).tolist()
    return [(group, (top.indices[group] + group * cfg.codes).tolist()) for group in order]
