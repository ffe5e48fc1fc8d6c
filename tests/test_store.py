import subprocess
import sys
import textwrap
import threading

import duckdb
import pandas as pd
import pytest

from workbench.store import SCHEMA_VERSION, Store, StoreError, StoreLockedError


def _stats_row(n: int) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m", "hook_point": "h", "corpus": "c", "n_tokens": n, "norm_mean": 1.0,
                          "norm_std": 0.0, "dim_mean": [0.0], "dim_var": [1.0]}])


def _dump(store: Store) -> dict:
    return {t: store.query(f"SELECT * FROM {t} ORDER BY ALL").to_dict("records") for t in ("runs", "activation_stats")}


def test_publish_replaces_rows_of_the_same_run(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    assert store.begin_run("r1", "collect", {"a": 1})
    store.publish("r1", {"activation_stats": _stats_row(5)}, finish=False)
    store.publish("r1", {"activation_stats": _stats_row(7)})
    df = store.query("SELECT n_tokens FROM activation_stats WHERE run_id = 'r1'")
    assert df["n_tokens"].tolist() == [7]
    assert store.run_status("r1") == "finished"
    assert not store.begin_run("r1", "collect", {"a": 1})  # finished: a no-op


def test_failed_publish_leaves_store_unchanged(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.begin_run("r1", "collect", {})
    store.publish("r1", {"activation_stats": _stats_row(5)})
    before = _dump(store)
    with pytest.raises(StoreError, match="lack columns"):
        store.publish("r1", {"activation_stats": pd.DataFrame([{"model": "x"}])})
    with pytest.raises(StoreError, match="unknown table"):
        store.publish("r1", {"runs; DROP TABLE runs": _stats_row(1)})
    assert _dump(store) == before


def test_store_from_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path).init()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="newer than this workbench"):
        Store(path).query("SELECT 1")
    with pytest.raises(StoreError, match="newer than this workbench"):
        Store(path).begin_run("x", "collect", {})
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    con.close()


def test_store_locked_by_another_writer(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path).init()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match="locked by another process"):
            Store(path, lock_timeout=0.5).begin_run("r", "collect", {})
        with pytest.raises(StoreLockedError):
            Store(path, lock_timeout=0.5).query("SELECT 1")
    finally:
        holder.kill()
        holder.wait()
    assert Store(path).query("SELECT count(*) AS n FROM runs")["n"].item() == 0


def test_read_only_query_cannot_write(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.init()
    with pytest.raises(StoreError, match="read-only"):
        store.query("DELETE FROM runs")


WRITES = ["DELETE FROM runs", "INSERT INTO runs (run_id) VALUES ('x')", "UPDATE runs SET status = 'x'",
          "DROP TABLE runs", "CREATE TABLE t(a INT)", "ALTER TABLE runs ADD COLUMN b INT", "CREATE MACRO m(a) AS a",
          "COPY runs TO '{dir}/out.csv'", "EXPORT DATABASE '{dir}/export'", "ATTACH '{dir}/new.duckdb' AS n",
          "DETACH s", "SET enable_external_access = true", "USE memory", "LOAD httpfs", "INSTALL httpfs",
          "CHECKPOINT", "VACUUM", "BEGIN TRANSACTION", "CALL pragma_version()", "PRAGMA version",
          "SELECT 1; DELETE FROM runs",
          # the escape from the issue: leave the read-only store, attach the same file read-write
          "DETACH s; ATTACH '{store}' AS w; DELETE FROM w.runs"]


@pytest.mark.parametrize("statement", WRITES)
def test_user_sql_cannot_write_the_store_or_any_file(tmp_path, statement):
    store = Store(tmp_path / "s.duckdb")
    store.begin_run("r1", "train", {})
    before = sorted(tmp_path.iterdir()), _dump(store)
    with pytest.raises(StoreError):
        store.user_query(statement.format(dir=tmp_path, store=store.path))
    assert (sorted(tmp_path.iterdir()), _dump(store)) == before


def test_the_sandboxed_connection_refuses_writes_without_the_statement_check(tmp_path):
    """Defence in depth: even a statement the allow-list would have stopped fails on the connection."""
    store = Store(tmp_path / "s.duckdb")
    store.begin_run("r1", "train", {})
    with store._connect(read_only=True, sandboxed=True) as con:
        for statement in (f"COPY runs TO '{tmp_path}/o.csv'", f"ATTACH '{tmp_path}/n.duckdb' AS n", "DELETE FROM runs",
                          "SET enable_external_access = true"):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.duckdb"] and len(store.query("FROM runs")) == 1


def test_user_sql_reads_and_cannot_reach_other_files(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.begin_run("r1", "train", {})
    (tmp_path / "secret.csv").write_text("a\n1\n")
    for read in ("SELECT run_id FROM runs", "WITH r AS (SELECT * FROM runs) SELECT run_id FROM r", "FROM runs",
                 "DESCRIBE runs", "SHOW TABLES", "SUMMARIZE runs", "EXPLAIN SELECT * FROM runs"):
        assert len(store.user_query(read)) >= 1
    with pytest.raises(StoreError, match="query failed"):
        store.user_query(f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")
    with pytest.raises(StoreError, match="no store"):
        Store(tmp_path / "absent.duckdb").user_query("SELECT 1")


def test_older_store_is_migrated_on_first_use(tmp_path):
    from workbench.store import MIGRATIONS

    path = tmp_path / "s.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version(version INTEGER)")
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.execute("INSERT INTO runs VALUES ('old', 'collect', '{}', 'finished', NULL, NULL, NULL)")
    con.close()
    store = Store(path)
    assert store.run_status("old") == "finished"
    assert "window_tokens" in store.query("DESCRIBE feature_examples")["column_name"].tolist()


def test_reader_holds_the_file_only_while_open(tmp_path):
    path = tmp_path / "s.duckdb"
    store = Store(path)
    store.init()
    writer_elsewhere = [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(path)]
    with store.reader() as reader:
        reader.query("SELECT count(*) FROM runs")
        assert subprocess.run(writer_elsewhere, capture_output=True).returncode != 0
    assert subprocess.run(writer_elsewhere, capture_output=True).returncode == 0


def test_a_reader_left_in_an_aborted_transaction_still_releases_the_file(tmp_path):
    path = tmp_path / "s.duckdb"
    store = Store(path)
    store.init()
    with pytest.raises(StoreError, match="no_such_table"), store.reader() as reader:
        reader.query("BEGIN TRANSACTION")
        reader.query("SELECT * FROM no_such_table")
    writer_elsewhere = [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(path)]
    assert subprocess.run(writer_elsewhere, capture_output=True).returncode == 0
    assert store.query("SELECT count(*) AS n FROM runs")["n"].item() == 0


def test_threads_read_while_the_same_process_publishes(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.publish("r0", {"activation_stats": _stats_row(1)})
    counts, errors = [], []

    def read() -> None:
        try:
            for _ in range(20):
                counts.append(store.query("SELECT count(*) AS n FROM activation_stats")["n"].item())
        except Exception as err:  # collected and asserted on below
            errors.append(err)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(1, 6):
        store.publish(f"r{i}", {"activation_stats": _stats_row(1)})
    for t in threads:
        t.join()
    assert not errors and len(counts) == 60
    assert set(counts) <= set(range(1, 7))
    assert store.query("SELECT count(*) AS n FROM activation_stats")["n"].item() == 6


FULL_DISK_PUBLISH = textwrap.dedent("""
    import os, resource, signal, sys
    import numpy as np, pandas as pd
    from workbench.store import Store
    store = Store(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
    limit = os.path.getsize(sys.argv[1]) + 256 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    n = 1_000_000
    rows = pd.DataFrame({"place": np.arange(n), "name": "x" * 20, "country": "y" * 20, "lat": 0.5, "lon": 0.5})
    with store.running("r2", "geo", {}):
        store.publish("r2", {"geo_places": rows})
    """)


def test_a_full_disk_during_publish_leaves_the_store_as_it_was(tmp_path):
    """The file-size limit (RLIMIT_FSIZE) stands in for a full disk: every write past it fails."""
    store = Store(tmp_path / "s.duckdb")
    store.begin_run("r1", "geo", {})
    places = pd.DataFrame({"place": range(3), "name": "a", "country": "b", "lat": 1.0, "lon": 2.0})
    store.publish("r1", {"geo_places": places})
    before = store.query("SELECT * FROM geo_places ORDER BY ALL")
    run = subprocess.run([sys.executable, "-c", FULL_DISK_PUBLISH, str(store.path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode != 0
    assert "StoreError: publishing r2 failed, nothing was written: IO Error" in run.stderr
    assert "File too large" in run.stderr
    assert store.query("SELECT * FROM geo_places ORDER BY ALL").equals(before)
    assert store.run_status("r1") == "finished" and store.run_status("r2") in ("running", "failed")
    store.publish("r2", {"geo_places": places.assign(place=[7, 8, 9])})   # the store is still usable
    assert store.query("SELECT count(*) AS n FROM geo_places")["n"].item() == 6


KILLED_CREATING = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import duckdb
    from workbench.store import Store

    def killed_before_the_header(database, *args, **kwargs):
        Path(database).touch()   # DuckDB creates the file, then writes its header
        os.kill(os.getpid(), signal.SIGKILL)

    duckdb.connect = killed_before_the_header
    Store(sys.argv[1]).init()
    """)


def test_a_command_killed_while_it_creates_the_store_leaves_none_to_refuse(tmp_path):
    path = tmp_path / "s.duckdb"
    killed = subprocess.run([sys.executable, "-c", KILLED_CREATING, str(path)], capture_output=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    assert Store(path).query("SELECT count(*) AS n FROM runs")["n"].item() == 0   # was: "not a valid DuckDB file"
