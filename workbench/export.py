"""Parquet copies of the store's tables and of the activation cache, for engines other than this one.

    workbench export --out exported/
    duckdb -c "SELECT run_id, status FROM 'exported/store/runs.parquet'"
    duckdb -c "SELECT seq, pos, token, acts[1:4] FROM 'exported/activations/*/shard_*.parquet' LIMIT 5"

Tables stream through DuckDB's Arrow record batches into one Parquet file each (a read-only open
of the store: nothing is written to it). Each activation shard (safetensors) becomes a Parquet
file of the same rows: `acts` as a fixed-size list of float32, `seq`, `pos`, `token`,
`batch_median_norm`; the cache's manifest (what stream the shards hold) is copied beside them.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.torch import load_file

from workbench.activations import Rows
from workbench.paths import write_atomically
from workbench.store import Store, StoreError

BATCH_ROWS = 65_536


def export_tables(store: Store, out: Path, tables: list[str] | None = None) -> list[Path]:
    """Every table of the store (or the named ones) as `out/<table>.parquet`; StoreError for an
    unknown table name, before anything is written."""
    with store.reader() as reader:
        known = reader.query("SELECT table_name FROM information_schema.tables ORDER BY table_name")
        names = tables or known["table_name"].tolist()
        unknown = sorted(set(names) - set(known["table_name"]))
        if unknown:
            raise StoreError(f"unknown tables {unknown}: the store has {known['table_name'].tolist()}")
        written = []
        for name in names:
            batches = reader.con.execute(f'SELECT * FROM "{name}"').to_arrow_reader(BATCH_ROWS)
            path = out / f"{name}.parquet"
            write_atomically(path, partial(_write_batches, batches=batches))
            written.append(path)
    return written


def _write_batches(path: Path, batches: pa.RecordBatchReader) -> None:
    """Stream `batches` into one Parquet file."""
    with pq.ParquetWriter(path, batches.schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def export_activations(cache: Path, out: Path) -> list[Path]:
    """Every complete-or-partial shard of every activation cache under `cache` as Parquet under
    `out/<cache digest>/`, with the manifest; a shard already exported is skipped."""
    written = []
    for manifest in sorted(cache.glob("*/manifest.json")):
        target = out / manifest.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for shard in sorted(manifest.parent.glob("shard_*.safetensors")):
            path = target / shard.with_suffix(".parquet").name
            if not path.exists():
                write_atomically(path, partial(_write_shard, shard))
            written.append(path)
        shutil.copyfile(manifest, target / "manifest.json")
    return written


def _write_shard(shard: Path, path: Path) -> None:
    pq.write_table(shard_table(shard), path)


def shard_table(shard: Path) -> pa.Table:
    """One activation shard's rows as an Arrow table (`acts` a fixed-size list of float32)."""
    tensors = load_file(shard)
    acts = tensors["acts"].float().contiguous()
    columns = {"acts": pa.FixedSizeListArray.from_arrays(pa.array(acts.flatten().numpy()), acts.shape[1])}
    columns.update({name: pa.array(tensors[name].numpy()) for name in Rows.FIELDS if name != "acts"})
    return pa.table(columns)
