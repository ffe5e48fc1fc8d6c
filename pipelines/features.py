"""`workbench features`: one pass over evaluation tokens computes every feature's dashboard.

For each feature: firing frequency, mean and max activation, an activation histogram, top
examples and examples sampled from activation quantiles (each with a token window and per-token
activations), and logit effects (decoder row x unembedding). The pass encodes each token once
and keeps the nonzero (feature, token, activation) entries; per-feature selection then runs as
DuckDB window queries over those entries, never as a loop over features.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

import saes
from workbench import corpora, queries
from workbench.config import config_id, require_positive, to_dict
from workbench.models import LoadedModel
from workbench.registered import load_registered
from workbench.sources import SPLITS, ActivationSource, activation_rows, prompt_stream_id, token_sequences
from workbench.store import Store
from workbench.token_rule import TokenRule


@dataclass
class FeaturesConfig:
    """Build feature pages for one dictionary."""

    dict_id: str = ""
    """Dictionary id in the store (see `workbench sql "SELECT dict_id FROM dictionaries"`)."""
    corpus: str = ""
    """Corpus for the pass; empty uses the corpus the dictionary was trained on."""
    split: str = "eval"
    """Corpus split: `eval` (held-out documents) or `train` (reuses the training activation cache)."""
    tokens: int = 100_000
    """Evaluation tokens to pass over."""
    context: int = 128
    """Tokens per evaluation sequence."""
    n_top: int = 20
    """Top-activating examples kept per feature."""
    n_quantiles: int = 10
    """Activation quantile bins to sample examples from."""
    per_quantile: int = 5
    """Examples sampled per quantile bin."""
    window_before: int = 24
    """Tokens of context before the activating token in an example window."""
    window_after: int = 8
    """Tokens after it."""
    hist_bins: int = 40
    """Histogram bins over (0, max activation]."""
    n_logits: int = 10
    """Top and bottom tokens of the logit effect."""
    forward_batch: int = 8
    """Sequences per model forward pass."""
    seed: int = 0
    """Seed of quantile sampling."""

    def __post_init__(self) -> None:
        if not self.dict_id:
            raise ValueError("dict_id is required")
        if self.split not in SPLITS:
            raise ValueError(f"split must be train or eval, got {self.split!r}")
        require_positive(self, "tokens", "context", "n_top", "n_quantiles", "hist_bins", "forward_batch")
        for name in ("per_quantile", "window_before", "window_after", "n_logits"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def run(cfg: FeaturesConfig, store: Store, progress: bool = True) -> str:
    row = queries.dictionary_row(store, cfg.dict_id)  # unknown dictionary: LookupError before anything is written
    train_cfg = queries.run_config(store, row["run_id"])
    corpus, layout = cfg.corpus or train_cfg.get("corpus", "wiki"), train_cfg.get("layout", "packed")
    run_id = config_id("features", {**to_dict(cfg), "corpus": corpus, **corpora.order_key(corpus)})
    if store.finished(run_id):
        return run_id
    _, loaded, sae = load_registered(store, cfg.dict_id)   # d_in must match the hook point
    source = ActivationSource(model=row["model"], hook_point=row["hook_point"], corpus=corpus, layout=layout,
                              context=cfg.context)
    trained_on = ActivationSource(model=row["model"], hook_point=row["hook_point"],
                                  corpus=train_cfg.get("corpus", "wiki"), layout=layout,
                                  context=train_cfg.get("context", cfg.context))
    rule = TokenRule.stored(train_cfg.get("token_rule"))   # the rule the dictionary was fitted with
    origins = sae.origins()
    if origins is not None and origins[0] != prompt_stream_id(trained_on, "train", loaded.tokenizer, rule):
        raise ValueError(f"{cfg.dict_id}'s atoms were taken from another stream than its training config "
                         "describes: their origins cannot be shown")
    with store.running(run_id, "features", {**to_dict(cfg), "corpus": corpus, "token_rule": to_dict(rule)}):
        tables = build_tables(cfg, loaded, sae, source, rule, run_id, progress)
        if origins is not None:
            tables["atom_origins"] = atom_origins(cfg, loaded, origins[1], trained_on)
        store.publish(run_id, tables)
    return run_id


def encode_pass(loaded: LoadedModel, sae: saes.Dictionary, source: ActivationSource, rule: TokenRule,
                cfg: FeaturesConfig, progress: bool) -> tuple[pa.Table, list[torch.Tensor], int]:
    """Encode every evaluation token the rule counts once; return nonzero entries (feature, seq, pos,
    act), the sequences (the last one cut after the last token encoded) and the number of tokens
    encoded. Tokens the rule leaves out are never examples and do not count in frequencies.

    Each row's (sequence, position) comes from the activation stream itself, so entries point at the
    token that produced them whether the rows were computed now or read from the cache."""
    sequences = token_sequences(loaded, source, cfg.split)()
    seqs: list[torch.Tensor] = []
    parts: list[pa.Table] = []
    n_rows, last_pos = 0, 0
    stream = activation_rows(loaded, source, cfg.split, cfg.tokens, cfg.forward_batch, progress=False, rule=rule)
    for rows in tqdm(stream, disable=not progress, desc="feature pass"):
        if not len(rows):
            continue
        seqs += itertools.islice(sequences, int(rows.seq[-1]) + 1 - len(seqs))
        n_rows, last_pos = n_rows + len(rows), int(rows.pos[-1])
        with torch.no_grad():
            code = sae.encode(rows.acts)
        active = (code.values > 0).numpy()
        token_index = np.nonzero(active)[0]
        parts.append(pa.table({"feature": code.indices.numpy()[active].astype(np.int32),
                               "seq": rows.seq.numpy()[token_index].astype(np.int32),
                               "pos": rows.pos.numpy()[token_index].astype(np.int32),
                               "act": code.values.numpy()[active].astype(np.float32)}))
    if not parts:
        raise ValueError(f"no token of the {cfg.split} split passes the token rule {rule}: nothing to encode")
    seqs[-1] = seqs[-1][: last_pos + 1]
    return pa.concat_tables(parts), seqs, n_rows


def build_tables(cfg: FeaturesConfig, loaded: LoadedModel, sae: saes.Dictionary, source: ActivationSource,
                 rule: TokenRule, run_id: str, progress: bool) -> dict[str, pd.DataFrame | pa.Table]:
    entries, seqs, n_tokens = encode_pass(loaded, sae, source, rule, cfg, progress)
    con = duckdb.connect()
    con.register("entries", entries)
    stats = _feature_stats(con, cfg, n_tokens)
    logits = logit_effects(loaded, sae, cfg.n_logits)
    stats["top_logits"] = [json.dumps(logits[0][f]) if logits else "[]" for f in stats["feature"]]
    stats["bottom_logits"] = [json.dumps(logits[1][f]) if logits else "[]" for f in stats["feature"]]
    stats.insert(0, "dict_id", cfg.dict_id)
    docs, tokens = _documents(loaded, seqs, source.corpus, run_id)
    examples = _examples(con, cfg, tokens, run_id)
    return {"documents": docs, "tokens": tokens, "feature_stats": stats, "feature_examples": examples}


def _feature_stats(con: duckdb.DuckDBPyConnection, cfg: FeaturesConfig, n_tokens: int) -> pd.DataFrame:
    return con.execute("""
        WITH agg AS (SELECT feature, count(*) AS n, avg(act) AS mean_act, max(act) AS max_act
                     FROM entries GROUP BY feature),
        bins AS (SELECT e.feature, least(floor(e.act / a.max_act * $bins)::INT, $bins - 1) AS bin, count(*) AS c
                 FROM entries e JOIN agg a USING (feature) GROUP BY ALL)
        SELECT a.feature, a.n / $n_tokens AS freq, a.mean_act, a.max_act,
               [a.max_act * i / $bins FOR i IN range($bins + 1)]::FLOAT[] AS hist_edges,
               [coalesce(map_extract_value(map(list(b.bin), list(b.c)), i), 0)
                FOR i IN range($bins)]::BIGINT[] AS hist_counts
        FROM agg a JOIN bins b USING (feature) GROUP BY a.feature, a.n, a.mean_act, a.max_act
        ORDER BY a.feature""", {"bins": cfg.hist_bins, "n_tokens": n_tokens}).df()


def _examples(con: duckdb.DuckDBPyConnection, cfg: FeaturesConfig, tokens: pa.Table, run_id: str) -> pa.Table:
    """Top-n and per-quantile samples, each with its window's tokens and the feature's activations on them.

    Ties in activation are binned by (seq, pos): without that, rows read back in another order
    after a resumed pass could fall in the neighbouring quantile (a fault-sweep failure, session 30)."""
    con.register("doc_tokens", tokens)
    con.execute("""CREATE TEMP TABLE seq_tokens AS
                   SELECT split_part(doc_id, '/', -1)::INT AS seq, list(token ORDER BY pos) AS toks
                   FROM doc_tokens GROUP BY doc_id""")
    return con.sql("""
        WITH ranked AS (
            SELECT *, row_number() OVER (PARTITION BY feature ORDER BY act DESC, seq, pos) - 1 AS top_rank,
                   ntile($nq) OVER (PARTITION BY feature ORDER BY act, seq, pos) - 1 AS q
            FROM entries),
        sampled AS (
            SELECT *, row_number() OVER (PARTITION BY feature, q ORDER BY hash(seq, pos, feature, $seed)) - 1 AS q_rank
            FROM ranked),
        chosen AS (
            SELECT feature, 'top' AS kind, top_rank AS rank, seq, pos, act FROM sampled WHERE top_rank < $n_top
            UNION ALL
            SELECT feature, 'q' || q AS kind, q_rank AS rank, seq, pos, act FROM sampled WHERE q_rank < $per_q),
        windows AS (
            SELECT c.*, greatest(c.pos - $before, 0) AS w_start, least(c.pos + $after + 1, len(s.toks)) AS w_end,
                   s.toks
            FROM chosen c JOIN seq_tokens s USING (seq)),
        with_acts AS (
            SELECT w.feature, w.kind, w.rank, w.seq, w.pos, w.act, w.w_start, w.w_end,
                   list_slice(w.toks, w.w_start + 1, w.w_end) AS window_tokens,
                   map(list(e.pos) FILTER (WHERE e.pos IS NOT NULL),
                       list(e.act) FILTER (WHERE e.pos IS NOT NULL)) AS acts_at
            FROM windows w LEFT JOIN entries e
              ON e.feature = w.feature AND e.seq = w.seq AND e.pos >= w.w_start AND e.pos < w.w_end
            GROUP BY ALL)
        SELECT $dict_id AS dict_id, feature, kind, rank::INT AS rank, $run_id || '/' || seq AS doc_id, pos, act,
               w_start AS window_start,
               [coalesce(map_extract_value(acts_at, p), 0) FOR p IN range(w_start, w_end)]::FLOAT[] AS window_acts,
               window_tokens
        FROM with_acts
        ORDER BY feature, kind = 'top' DESC, kind, rank
    """, params={"nq": cfg.n_quantiles, "seed": cfg.seed, "n_top": cfg.n_top, "per_q": cfg.per_quantile,
          "before": cfg.window_before, "after": cfg.window_after, "dict_id": cfg.dict_id,
          "run_id": run_id}).to_arrow_table()


def _documents(loaded: LoadedModel, seqs: list[torch.Tensor], corpus: str,
               run_id: str) -> tuple[pd.DataFrame, pa.Table]:
    """Each evaluation sequence becomes a document; its tokens (position 0 included) go to `tokens`."""
    tok = loaded.tokenizer
    doc_ids = [f"{run_id}/{i}" for i in range(len(seqs))]
    docs = pd.DataFrame({"doc_id": doc_ids, "corpus": corpus,
                         "text": [tok.decode(s) for s in seqs], "label": None,
                         "source": "evaluation sequence", "licence": "as the corpus"})
    flat = torch.cat(seqs).tolist()
    names = token_names(tok)
    pieces = [names[i] if i < len(names) else "" for i in flat]
    tokens = pa.table({"doc_id": np.repeat(doc_ids, [len(s) for s in seqs]),
                       "pos": np.concatenate([np.arange(len(s), dtype=np.int32) for s in seqs]),
                       "token_id": np.array(flat, np.int32), "token": pieces})
    return docs, tokens


def token_names(tokenizer: Any) -> list[str]:
    """The text of every token id, as a token shown on its own. A tokenizer whose pieces carry no
    spaces and whose decoding puts one between them (word-level, as the tiny model's) gets a leading
    space on each token, as a BPE's word-initial tokens have, so joined windows read as text."""
    names = [tokenizer.convert_tokens_to_string([t]) if t is not None else ""
             for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    special = set(tokenizer.all_special_ids)
    a, b = [i for i, name in enumerate(names) if i not in special and name.strip()][:2]
    if tokenizer.decode([a, b]) != f"{names[a]} {names[b]}":
        return names
    return [" " + name if name else name for name in names]


def atom_origins(cfg: FeaturesConfig, loaded: LoadedModel, origins: torch.Tensor,
                 trained_on: ActivationSource) -> pd.DataFrame:
    """One row per latent whose direction was taken from the training stream (ITDA): the sequence and
    position of the token it came from, and the tokens of the window around it."""
    wanted = {int(s) for s in origins[:, 0].tolist()}
    sequences = {i: seq for i, seq in enumerate(itertools.islice(token_sequences(loaded, trained_on, "train")(),
                                                                 max(wanted) + 1)) if i in wanted}
    names = token_names(loaded.tokenizer)
    rows = []
    for feature, (seq, pos, _) in enumerate(origins.tolist()):
        ids = sequences[seq].tolist()
        start, end = max(pos - cfg.window_before, 0), min(pos + cfg.window_after + 1, len(ids))
        rows.append({"dict_id": cfg.dict_id, "feature": feature, "seq": seq, "pos": pos, "window_start": start,
                     "window_tokens": [names[i] for i in ids[start:end]]})
    return pd.DataFrame(rows)


@torch.no_grad()
def logit_effects(loaded: LoadedModel, sae: saes.Dictionary, n: int,
                  chunk: int = 512) -> tuple[list[list], list[list]] | None:
    """Top/bottom tokens of (decoder direction of f) @ W_U per feature (direct logit effect); None if
    d_in != d_model."""
    if sae.d_in != loaded.model.cfg.d_model or n == 0:
        return None
    W_U = loaded.model.W_U                                   # [d_model, vocab]
    name = token_names(loaded.tokenizer)
    name += [""] * (W_U.shape[1] - len(name))             # ids past the tokenizer's (padding rows)
    top, bottom = [], []
    directions = sae.decoder_directions()
    for start in range(0, sae.d_sae, chunk):
        effect = directions[start: start + chunk] @ W_U       # [chunk, vocab]
        hi, lo = effect.topk(n, dim=1), effect.topk(n, dim=1, largest=False)
        top += [[[name[i], round(v, 4)] for v, i in zip(vs.tolist(), ix.tolist())] for vs, ix in zip(*hi)]
        bottom += [[[name[i], round(v, 4)] for v, i in zip(vs.tolist(), ix.tolist())] for vs, ix in zip(*lo)]
    return top, bottom
