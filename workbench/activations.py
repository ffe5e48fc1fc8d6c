"""Activation streams at a TransformerLens hook point.

corpus -> token sequences -> forward only up to the layer needed -> activations at the hook point
-> optional on-disk shard cache (resumable) -> mixing buffer (fill, shuffle, emit half) -> batches.

Two forward paths give the same activations (tests check parity):
- TransformerLens `run_with_hooks(..., stop_at_layer=L+1)`, any hook point;
- a fast path on the plain transformers model behind it (Llama-style blocks) for the hook points
  that map onto an HF module, stopping the forward at that module; TransformerLens's attention
  is ~20% slower than HF's SDPA on this CPU.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from workbench.models import LoadedModel, parse_hook_point
from workbench.paths import write_atomically


@dataclass
class StreamConfig:
    """How activations are produced and batched."""

    hook_point: str
    """TransformerLens hook name, e.g. `blocks.12.hook_resid_post`."""
    batch_size: int = 8
    """Sequences per model forward."""
    token_budget: int | None = None
    """Stop after this many activation rows (None: until the sequences run out)."""
    drop_first: bool = True
    """Drop position 0 of every sequence (BOS / `<|im_start|>`: huge norm, no content)."""
    backend: str = "auto"
    """`auto` (HF fast path when the hook maps onto an HF module), `hf` or `tl`."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {self.token_budget}")
        if self.backend not in ("auto", "hf", "tl"):
            raise ValueError(f"backend must be auto, hf or tl, got {self.backend!r}")


# -- one forward ---------------------------------------------------------------------------------

PER_HEAD_HOOKS = ("attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_result", "attn.hook_rot_q",
                  "attn.hook_rot_k")
"""Hook points whose activations are `[..., n_heads, d_head]`; dictionaries read them with the heads
merged into one `n_heads * d_head` vector per token (as SAELens does for hook_z)."""


def merge_heads(act: torch.Tensor, hook_point: str) -> torch.Tensor:
    """`[..., n_heads, d_head]` -> `[..., n_heads * d_head]` at per-head hook points; others unchanged."""
    return act.flatten(-2) if hook_point.endswith(PER_HEAD_HOOKS) else act


def split_heads(x: torch.Tensor, hook_point: str, n_heads: int) -> torch.Tensor:
    """Inverse of `merge_heads`."""
    return x.unflatten(-1, (n_heads, -1)) if hook_point.endswith(PER_HEAD_HOOKS) else x


class _StopForward(Exception):
    """Raised by a hook to end the forward once the wanted activation is captured."""


def hf_target(hf, hook_point: str) -> tuple[torch.nn.Module, str] | None:
    """Map a TransformerLens hook name onto (HF module, which tensor) for Llama-style models."""
    parts = hook_point.split(".")
    if parts[0] != "blocks" or not hasattr(getattr(hf, "model", None), "layers"):
        return None
    layer = hf.model.layers[int(parts[1])]
    table: dict[str, Callable[[], tuple[torch.nn.Module, str]]] = {
        "hook_resid_pre": lambda: (layer, "input"),
        "hook_resid_post": lambda: (layer, "output"),
        "hook_attn_out": lambda: (layer.self_attn, "output"),
        "hook_mlp_out": lambda: (layer.mlp, "output"),
        "mlp.hook_post": lambda: (layer.mlp.down_proj, "input"),
        "attn.hook_z": lambda: (layer.self_attn.o_proj, "input"),
    }
    make = table.get(".".join(parts[2:]))
    return make() if make else None


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def _hf_forward(loaded: LoadedModel, hook_points: list[str], tokens: torch.Tensor) -> list[torch.Tensor]:
    targets = [hf_target(loaded.hf, hook_point) for hook_point in hook_points]
    for hook_point, target in zip(hook_points, targets):
        if target is None:
            raise ValueError(f"hook point {hook_point!r} has no HF fast path for {loaded.name}")
    captured: dict[int, torch.Tensor] = {}

    def grab(i: int, tensor: torch.Tensor) -> None:
        captured[i] = tensor
        if len(captured) == len(hook_points):
            raise _StopForward

    handles = []
    for i, (module, which) in enumerate(t for t in targets if t is not None):
        if which == "input":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, kwargs, i=i: grab(i, args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, i=i: grab(i, _first_tensor(out))))
    try:
        loaded.hf.model(input_ids=tokens, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    # o_proj's input has the heads merged
    return [split_heads(captured[i], hook_point, loaded.model.cfg.n_heads) for i, hook_point in enumerate(hook_points)]


def _tl_forward(loaded: LoadedModel, hook_points: list[str], tokens: torch.Tensor,
                layers: list[int]) -> list[torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook) -> None:
        captured[hook.name] = act

    stop = max(layers) + 1 if all(hook_point.startswith("blocks.") for hook_point in hook_points) else None
    loaded.model.run_with_hooks(tokens, fwd_hooks=[(hook_point, grab) for hook_point in set(hook_points)],
                                stop_at_layer=stop, return_type=None)
    return [captured[hook_point] for hook_point in hook_points]


@torch.inference_mode()
def hook_activations(loaded: LoadedModel, hook_point: str, tokens: torch.Tensor,
                     backend: str = "auto") -> torch.Tensor:
    """Activations [B, T, ...] at `hook_point` for token ids [B, T], running only as far as needed."""
    return hook_activations_at(loaded, [hook_point], tokens, backend)[0]


@torch.inference_mode()
def hook_activations_at(loaded: LoadedModel, hook_points: list[str], tokens: torch.Tensor,
                        backend: str = "auto") -> list[torch.Tensor]:
    """Activations [B, T, ...] at each of `hook_points` from one forward that runs only as far as the
    deepest needs (reading every layer costs one forward, not one per layer). The HF fast path is
    taken when every hook point maps onto an HF module."""
    layers = [parse_hook_point(loaded, hook_point) for hook_point in hook_points]
    mappable = loaded.hf is not None and all(hf_target(loaded.hf, hook_point) is not None for hook_point in hook_points)
    if backend == "hf" or (backend == "auto" and mappable):
        return _hf_forward(loaded, hook_points, tokens)
    return _tl_forward(loaded, hook_points, tokens, layers)


# -- streams -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rows:
    """Activation rows with where each came from in the stream: sequence index (in corpus order,
    counting from the stream's first sequence), token position within that sequence, the token id
    there and the median activation norm of the row's forward batch (so the token rule gives the
    same answer on cached and fresh rows, whatever the chunking)."""

    acts: torch.Tensor
    """[n, d] float32."""
    seq: torch.Tensor
    """[n] int64."""
    pos: torch.Tensor
    """[n] int64."""
    token: torch.Tensor
    """[n] int64 token ids."""
    batch_median_norm: torch.Tensor
    """[n] float32: median activation norm over the rows of the forward batch the row came from."""

    FIELDS: ClassVar[tuple[str, ...]] = ("acts", "seq", "pos", "token", "batch_median_norm")

    def __len__(self) -> int:
        return len(self.acts)

    def __getitem__(self, rows: slice | torch.Tensor) -> Rows:
        """The rows a slice or a bool mask selects."""
        return Rows(*(getattr(self, f)[rows] for f in self.FIELDS))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f: getattr(self, f).contiguous() for f in self.FIELDS}

    @staticmethod
    def cat(parts: list[Rows]) -> Rows:
        return Rows(*(torch.cat([getattr(p, f) for p in parts]) for f in Rows.FIELDS))


def _padded_batches(sequences: Iterable[torch.Tensor], batch_size: int,
                    pad_id: int) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """Right-pad sequences into [B, T_max] batches (causal models: padding affects nothing before it)."""
    batch: list[torch.Tensor] = []
    for seq in sequences:
        batch.append(seq)
        if len(batch) == batch_size:
            yield _pad(batch, pad_id)
            batch = []
    if batch:
        yield _pad(batch, pad_id)


def _pad(batch: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, list[int]]:
    lengths = [len(s) for s in batch]
    out = torch.full((len(batch), max(lengths)), pad_id, dtype=torch.long)
    for i, s in enumerate(batch):
        out[i, : len(s)] = s
    return out, lengths


def _flatten(acts: torch.Tensor, tokens: torch.Tensor, lengths: list[int], drop_first: bool, first_seq: int) -> Rows:
    """[B, T, d] -> rows of the real (unpadded) positions, optionally without position 0."""
    start = 1 if drop_first else 0
    spans = [range(start, n) for n in lengths]
    rows = torch.cat([acts[i, s.start:s.stop] for i, s in enumerate(spans)]).float()
    median = rows.norm(dim=-1).median() if len(rows) else torch.tensor(0.0)
    return Rows(rows,
                torch.cat([torch.full((len(s),), first_seq + i, dtype=torch.long) for i, s in enumerate(spans)]),
                torch.cat([torch.arange(s.start, s.stop) for s in spans]),
                torch.cat([tokens[i, s.start:s.stop] for i, s in enumerate(spans)]),
                median.expand(len(rows)).clone())


def layer_batches(loaded: LoadedModel, hook_points: list[str], sequences: Iterable[torch.Tensor], batch_size: int,
                  drop_first: bool = True, backend: str = "auto",
                  first_seq: int = 0) -> Iterator[tuple[list[Rows], int]]:
    """(rows at each hook point, sequences consumed) per forward batch, in corpus order; one forward
    serves every hook point. `first_seq` numbers the first sequence."""
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    for tokens, lengths in _padded_batches(sequences, batch_size, pad_id):
        acts = hook_activations_at(loaded, hook_points, tokens, backend)
        yield [_flatten(merge_heads(a, hook_point), tokens, lengths, drop_first, first_seq)
               for a, hook_point in zip(acts, hook_points)], len(lengths)
        first_seq += len(lengths)


def whole_batches(loaded: LoadedModel, sequences: Iterable[torch.Tensor], cfg: StreamConfig, first_seq: int = 0,
                  progress: bool = True) -> Iterator[tuple[Rows, int]]:
    """(rows, sequences consumed) per forward batch, in corpus order, until the token budget is reached.

    Batches are never cut: the batch that crosses the budget is yielded whole, so a cache that stores
    what this yields has consumed exactly the sequences it counts. `first_seq` numbers the first
    sequence (a resumed stream continues the numbering)."""
    bar = tqdm(total=cfg.token_budget, unit="tok", desc=f"activations {cfg.hook_point}", disable=not progress)
    done = 0
    try:
        for [rows], consumed in layer_batches(loaded, [cfg.hook_point], sequences, cfg.batch_size, cfg.drop_first,
                                              cfg.backend, first_seq):
            done += len(rows)
            bar.update(len(rows))
            yield rows, consumed
            if cfg.token_budget is not None and done >= cfg.token_budget:
                return
    finally:
        bar.close()


def take(chunks: Iterable[Rows], budget: int | None) -> Iterator[Rows]:
    """The first `budget` rows of a stream of chunks (all of them for None)."""
    served = 0
    for rows in chunks:
        if budget is not None:
            rows = rows[: budget - served]
        served += len(rows)
        yield rows
        if budget is not None and served >= budget:
            return


def raw_activations(loaded: LoadedModel, sequences: Iterable[torch.Tensor], cfg: StreamConfig,
                    progress: bool = True) -> Iterator[Rows]:
    """Activation rows per forward batch, in corpus order, exactly up to the token budget (no cache)."""
    return take((rows for rows, _ in whole_batches(loaded, sequences, cfg, progress=progress)), cfg.token_budget)


CACHE_FORMAT = 4
"""Version of the shard layout; a cache of any other version is deleted and rebuilt. 4: shards carry
each row's `Rows` fields and the manifest counts whole sequences consumed (2 and 3, short-lived,
lacked some fields). Version 1 counted a budget-truncated last batch as whole, so a resumed cache
skipped rows (the feature-example misalignment bug)."""


class ShardCache:
    """Activation shards (safetensors: the `Rows` fields) plus a manifest; a killed collection resumes
    after the last shard.

    Shards hold whole forward batches only, and the manifest counts the source sequences they
    consumed, so a rerun with any budget skips exactly those sequences and continues in the same
    corpus order; rows carry their true (sequence, position) from the stream.
    """

    def __init__(self, root: Path, key: dict, shard_rows: int = 65_536):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest
        self.key = key
        self.shard_rows = shard_rows
        self.manifest_path = self.dir / "manifest.json"

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"format": CACHE_FORMAT, "key": self.key, "shards": [], "sequences_done": 0, "rows": 0,
                    "complete": False}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except ValueError as err:   # not JSON, or not UTF-8 text
            raise ValueError(self._unreadable(self.manifest_path, err)) from None
        if not isinstance(manifest, dict):
            raise ValueError(self._unreadable(self.manifest_path, "not a JSON object"))
        return manifest

    def check(self) -> None:
        """ValueError naming the manifest or a listed shard when it cannot be read, so that a run
        using the cache fails before it starts, not part-way through."""
        manifest = self.manifest()
        if manifest.get("format", 1) != CACHE_FORMAT:
            return   # rebuilt when streamed
        for shard in manifest["shards"]:
            path = self.dir / shard["file"]
            try:
                with safe_open(path, "pt"):   # reads and checks the header only
                    pass
            except (SafetensorError, OSError) as err:
                raise ValueError(self._unreadable(path, err)) from None

    def _unreadable(self, path: Path, reason: object) -> str:
        return f"activation cache file {path} is unreadable ({reason}): delete {self.dir} to rebuild it"

    def _write_manifest(self, manifest: dict) -> None:
        write_atomically(self.manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, default=str)))

    def _discard_outdated(self) -> None:
        """A cache written by an older format is deleted (with a message), never reused."""
        found = self.manifest().get("format", 1)
        if found == CACHE_FORMAT:
            return
        with self._exclusive():
            print(f"activation cache {self.dir} has format {found}, this version writes {CACHE_FORMAT}: rebuilding it")
            for path in self.dir.glob("shard_*.safetensors"):
                path.unlink()
            self.manifest_path.unlink()

    def cached(self, skip_rows: int = 0) -> Iterator[Rows]:
        """Cached rows in order, after the first `skip_rows`."""
        for shard in self.manifest()["shards"]:
            if skip_rows >= shard["rows"]:
                skip_rows -= shard["rows"]
                continue
            tensors = load_file(self.dir / shard["file"])
            yield Rows(*(tensors[f] for f in Rows.FIELDS))[skip_rows:]
            skip_rows = 0

    def _flush(self, manifest: dict, pending: list[Rows], sequences: int) -> None:
        rows = Rows.cat(pending)
        name = f"shard_{len(manifest['shards']):05d}.safetensors"
        save_file(rows.tensors(), self.dir / name)
        manifest["shards"].append({"file": name, "rows": len(rows)})
        manifest["sequences_done"] += sequences
        manifest["rows"] += len(rows)
        self._write_manifest(manifest)

    def stream(self, fresh: Callable[[int, int | None], Iterator[tuple[Rows, int]]],
               budget: int | None) -> Iterator[Rows]:
        """Yield up to `budget` rows: cached shards first, then fresh whole batches from
        `fresh(sequences_to_skip, rows_still_wanted)`, which are written as new shards. One cache
        serves every budget (a smaller one reads a prefix)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._discard_outdated()
        served = 0
        for rows in take(self.cached(), budget):
            served += len(rows)
            yield rows
        if (budget is not None and served >= budget) or self.manifest()["complete"]:
            return
        with self._exclusive():
            for rows in take(self.cached(served), None if budget is None else budget - served):
                served += len(rows)                                  # appended by another process meanwhile
                yield rows
            manifest = self.manifest()
            if (budget is not None and served >= budget) or manifest["complete"]:
                return
            wanted = None if budget is None else budget - served
            with closing(self._extend(manifest, fresh(manifest["sequences_done"], wanted), wanted)) as written:
                yield from take(written, wanted)   # closing: batches computed before a stop are written now

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Only one process appends shards to a cache at a time."""
        with open(self.dir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"activation cache {self.dir} is being written by another process; "
                                   "wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _extend(self, manifest: dict, batches: Iterator[tuple[Rows, int]], wanted: int | None) -> Generator[Rows]:
        """Write every whole batch (a shard per `shard_rows`), then yield its rows. Batches computed
        before the consumer stops (budget reached, exception, Ctrl-C) are written too."""
        pending: list[Rows] = []
        sequences = written = 0
        try:
            for rows, consumed in batches:
                pending.append(rows)
                sequences += consumed
                written += len(rows)
                if sum(len(p) for p in pending) >= self.shard_rows:
                    self._flush(manifest, pending, sequences)
                    pending, sequences = [], 0
                yield rows
        finally:
            if pending:
                self._flush(manifest, pending, sequences)
        if wanted is None or written < wanted:  # the sequences ran out
            manifest["complete"] = True
            self._write_manifest(manifest)


def cached_activations(loaded: LoadedModel, sequences: Callable[[], Iterator[torch.Tensor]], cfg: StreamConfig,
                       cache: ShardCache | None, progress: bool = True) -> Iterator[Rows]:
    """Activation rows up to the token budget, through the shard cache when one is given (resuming a
    partial one)."""
    if cache is None:
        yield from raw_activations(loaded, sequences(), cfg, progress)
        return

    def fresh(skip_sequences: int, wanted: int | None) -> Iterator[tuple[Rows, int]]:
        seqs = sequences()
        for _ in range(skip_sequences):
            next(seqs, None)
        yield from whole_batches(loaded, seqs, replace(cfg, token_budget=wanted), skip_sequences, progress)

    yield from cache.stream(fresh, cfg.token_budget)


class MixingBuffer:
    """Fill to capacity, shuffle, emit half, refill (SAELens/FAST-style), so batches mix many sequences."""

    def __init__(self, capacity: int, batch_rows: int, seed: int = 0):
        if batch_rows < 1 or capacity < 2 * batch_rows:
            raise ValueError(f"need batch_rows >= 1 and capacity >= 2 * batch_rows, got {capacity}, {batch_rows}")
        self.capacity, self.batch_rows = capacity, batch_rows
        self.generator = torch.Generator().manual_seed(seed)

    def mix(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        store: torch.Tensor | None = None
        fill = 0
        for chunk in chunks:
            while len(chunk):
                if store is None:
                    store = torch.empty(self.capacity, chunk.shape[1], dtype=chunk.dtype)
                take = min(len(chunk), self.capacity - fill)
                store[fill: fill + take] = chunk[:take]
                fill, chunk = fill + take, chunk[take:]
                if fill == self.capacity:
                    yield from self._emit(store, fill, self.capacity // 2)
                    fill = self.capacity - self.capacity // 2
        if store is not None and fill:
            yield from self._emit(store, fill, fill)

    def _emit(self, store: torch.Tensor, fill: int, count: int) -> Iterator[torch.Tensor]:
        store[:fill] = store[torch.randperm(fill, generator=self.generator)]
        for start in range(0, count, self.batch_rows):
            yield store[start: min(start + self.batch_rows, count)].clone()
        store[: fill - count] = store[count:fill].clone()
