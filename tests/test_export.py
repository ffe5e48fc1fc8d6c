"""`workbench export`: the store's tables and the activation cache as Parquet that DuckDB reads in place."""

from __future__ import annotations

import duckdb
import torch
from safetensors.torch import load_file

from workbench.cli import main
from workbench.store import Store

COLLECT = ["collect", "--model", "tiny", "--corpus", "wiki-sample", "--hook-point", "blocks.1.hook_resid_post",
           "--tokens", "1200", "--batch-size", "2", "--context", "64", "--shard-rows", "500"]


def test_export_round_trips_tables_and_shards(data_dir, capsys):
    store_path = data_dir / "w.duckdb"
    assert main(["--store", str(store_path), *COLLECT]) == 0
    out = data_dir / "exported"
    assert main(["--store", str(store_path), "export", "--out", str(out)]) == 0
    store = Store(store_path)
    runs = duckdb.sql(f"SELECT run_id, status FROM '{out}/store/runs.parquet'").df()
    assert runs.equals(store.query("SELECT run_id, status FROM runs"))
    stats = duckdb.sql(f"SELECT n_tokens FROM '{out}/store/activation_stats.parquet'").fetchall()
    assert stats == [(store.query("SELECT n_tokens FROM activation_stats")["n_tokens"].item(),)]
    shards = sorted((data_dir / "cache" / "activations").glob("*/shard_*.safetensors"))
    assert len(shards) >= 2
    for shard in shards:
        original = load_file(shard)
        exported = duckdb.sql(f"SELECT acts, token FROM '{out}/activations/{shard.parent.name}/{shard.stem}.parquet'")
        rows = exported.fetchall()
        assert torch.equal(torch.tensor([row[0] for row in rows]), original["acts"])
        assert [row[1] for row in rows] == original["token"].tolist()
    total = duckdb.sql(f"SELECT count(*) FROM '{out}/activations/*/shard_*.parquet'").fetchall()
    assert total == [(sum(len(load_file(s)["acts"]) for s in shards),)]


def test_unknown_table_is_refused_before_writing(data_dir, capsys):
    store_path = data_dir / "w.duckdb"
    Store(store_path).init()
    out = data_dir / "exported"
    assert main(["--store", str(store_path), "export", "--out", str(out), "--tables", "runs,no_such_table"]) == 2
    assert "unknown tables ['no_such_table']" in capsys.readouterr().err
    assert not out.exists()
