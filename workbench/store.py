"""The DuckDB store: schema with versioned migrations, staged publishes, short-lived readers.

DuckDB allows one writing process per file, and opening fails at once while another process holds
a conflicting lock. So nothing keeps the file open: pipelines compute their rows in memory (or in
a run-local staging file), then `publish` them in one short transaction that first deletes any
earlier rows of the same run id; readers open read-only, query, close, and retry briefly on a lock
conflict. A run that dies leaves at most a `running` row in `runs`; rerunning it replaces its rows.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, closing, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from workbench.paths import default_store_path

MIGRATIONS: list[str] = [
    # 1: the tables every pipeline shares (DESIGN.md "Store").
    """
    CREATE TABLE runs(run_id VARCHAR PRIMARY KEY, kind VARCHAR, config JSON, status VARCHAR,
        started_at TIMESTAMP, finished_at TIMESTAMP, error VARCHAR);
    CREATE TABLE activation_stats(run_id VARCHAR, model VARCHAR, hook_point VARCHAR, corpus VARCHAR,
        n_tokens BIGINT, norm_mean DOUBLE, norm_std DOUBLE,
        dim_mean FLOAT[], dim_var FLOAT[]);
    CREATE TABLE dictionaries(run_id VARCHAR, dict_id VARCHAR, method VARCHAR, model VARCHAR,
        hook_point VARCHAR, d_in INTEGER, d_dict INTEGER, path VARCHAR, config JSON, metrics JSON,
        created_at TIMESTAMP);
    CREATE TABLE documents(run_id VARCHAR, doc_id VARCHAR, corpus VARCHAR, text VARCHAR, label VARCHAR,
        source VARCHAR, licence VARCHAR);
    CREATE TABLE tokens(run_id VARCHAR, doc_id VARCHAR, pos INTEGER, token_id INTEGER, token VARCHAR);
    CREATE TABLE feature_stats(run_id VARCHAR, dict_id VARCHAR, feature INTEGER, freq DOUBLE,
        mean_act DOUBLE, max_act DOUBLE, hist_edges FLOAT[], hist_counts BIGINT[],
        top_logits JSON, bottom_logits JSON);
    CREATE TABLE feature_examples(run_id VARCHAR, dict_id VARCHAR, feature INTEGER, kind VARCHAR,
        rank INTEGER, doc_id VARCHAR, pos INTEGER, act FLOAT, window_start INTEGER, window_acts FLOAT[]);
    CREATE TABLE explanations(run_id VARCHAR, expl_id VARCHAR, dict_id VARCHAR, feature INTEGER,
        explainer VARCHAR, prompt_version VARCHAR, text VARCHAR, tokens_in INTEGER, tokens_out INTEGER,
        seconds DOUBLE, created_at TIMESTAMP);
    CREATE TABLE scores(run_id VARCHAR, expl_id VARCHAR, scorer VARCHAR, score DOUBLE, n INTEGER,
        details JSON);
    """,
    # 2: example windows carry their token strings, so a feature page is one range scan with no
    # join against `tokens` (that join scanned every token row per page: ~130 ms at 13M tokens).
    """
    ALTER TABLE feature_examples ADD COLUMN window_tokens VARCHAR[];
    """,
    # 3: model variants (workbench/variants.py): models the project changed, with their parent.
    """
    CREATE TABLE models(run_id VARCHAR, name VARCHAR, parent VARCHAR, how JSON, path VARCHAR,
        created_at TIMESTAMP);
    """,
    # 4: a judge model's yes/no threshold per classifier scorer, calibrated on known features
    # (pipelines/autointerp/judge_check.py), with that check's per-feature results.
    """
    CREATE TABLE judge_calibrations(run_id VARCHAR, judge VARCHAR, scorer VARCHAR, prompt_version VARCHAR,
        threshold DOUBLE, auroc DOUBLE, balanced_accuracy DOUBLE, n_features INTEGER, details JSON,
        created_at TIMESTAMP);
    """,
    # 5: the evaluation suite (pipelines/evaluate.py): one row per dictionary and metric.
    """
    CREATE TABLE evaluations(run_id VARCHAR, dict_id VARCHAR, metric VARCHAR, value DOUBLE, details JSON,
        created_at TIMESTAMP);
    """,
    # 6: answers generated with a markup feature steered (pipelines/special_steering.py), one row per
    # (markup kind, alpha, question).
    """
    CREATE TABLE steering_generations(run_id VARCHAR, dict_id VARCHAR, markup VARCHAR, feature INTEGER,
        alpha DOUBLE, question_id INTEGER, question VARCHAR, answer VARCHAR, created_at TIMESTAMP);
    """,
    # 7: layer-by-layer similarity of two models (pipelines/compare_layers.py), one row per
    # (measure, layer of A, layer of B).
    """
    CREATE TABLE similarities(run_id VARCHAR, measure VARCHAR, model_a VARCHAR, layer_a INTEGER,
        model_b VARCHAR, layer_b INTEGER, value DOUBLE, created_at TIMESTAMP);
    """,
    # 8: where each atom of a dictionary whose atoms are data (ITDA) was taken from; the feature pass
    # writes it beside the examples.
    """
    CREATE TABLE atom_origins(run_id VARCHAR, dict_id VARCHAR, feature INTEGER, seq INTEGER, pos INTEGER,
        window_start INTEGER, window_tokens VARCHAR[]);
    """,
    # 9: SAUCE-style concept unlearning (pipelines/unlearn.py): each concept's selected features, its
    # scores per method, and the generations before and after.
    """
    CREATE TABLE unlearn_features(run_id VARCHAR, dict_id VARCHAR, concept VARCHAR, rank INTEGER,
        feature INTEGER, score DOUBLE, freq_concept DOUBLE, freq_other DOUBLE, mean_concept DOUBLE,
        mean_other DOUBLE);
    CREATE TABLE unlearn_scores(run_id VARCHAR, dict_id VARCHAR, concept VARCHAR, method VARCHAR,
        draw INTEGER, n_features INTEGER, ce_concept_before DOUBLE, ce_concept DOUBLE,
        ce_other_before DOUBLE, ce_other DOUBLE, forgetting DOUBLE, utility_cost DOUBLE,
        selectivity DOUBLE, content_before DOUBLE, content DOUBLE, content_drop DOUBLE,
        other_similarity DOUBLE, concept_tokens INTEGER, other_tokens INTEGER);
    CREATE TABLE unlearn_generations(run_id VARCHAR, concept VARCHAR, method VARCHAR, draw INTEGER,
        kind VARCHAR, prompt_id INTEGER, prompt VARCHAR, before VARCHAR, after VARCHAR);
    """,
    # 10: Resa SAE-tuning against plain SFT (pipelines/sae_tune.py): held-out accuracy per model and seed.
    """
    CREATE TABLE sae_tune_results(run_id VARCHAR, method VARCHAR, seed INTEGER, train_seconds DOUBLE,
        accuracy DOUBLE, lenient_accuracy DOUBLE, n_eval INTEGER, details JSON, created_at TIMESTAMP);
    """,
    # 11: circuit discovery (pipelines/circuits.py): each task's prompts and accuracy, every method's
    # score per head, its top edges, and its ROC-AUC against the patching ground truth with wall time.
    """
    CREATE TABLE circuit_tasks(run_id VARCHAR, task VARCHAR, candidates INTEGER, accuracy DOUBLE,
        pairs INTEGER, prompt_tokens INTEGER, logit_diff_positive DOUBLE, logit_diff_negative DOUBLE,
        example_positive VARCHAR, example_negative VARCHAR);
    CREATE TABLE circuit_heads(run_id VARCHAR, task VARCHAR, method VARCHAR, layer INTEGER, head INTEGER,
        score DOUBLE, in_circuit BOOLEAN);
    CREATE TABLE circuit_edges(run_id VARCHAR, task VARCHAR, method VARCHAR, rank INTEGER, layer INTEGER,
        head INTEGER, layer2 INTEGER, head2 INTEGER, score DOUBLE);
    CREATE TABLE circuit_results(run_id VARCHAR, task VARCHAR, method VARCHAR, sae_prompts INTEGER,
        seed INTEGER, seconds DOUBLE, auc DOUBLE);
    """,
    # 12: geospatial interpretability (pipelines/geo.py): the places, Moran's I of every unit, the
    # lat/lon probes, and per-place values with local Moran's I of the mapped units.
    """
    CREATE TABLE geo_places(run_id VARCHAR, place INTEGER, name VARCHAR, country VARCHAR, lat DOUBLE, lon DOUBLE);
    CREATE TABLE geo_units(run_id VARCHAR, layer INTEGER, kind VARCHAR, unit INTEGER, morans_i DOUBLE,
        p_value DOUBLE);
    CREATE TABLE geo_probes(run_id VARCHAR, layer INTEGER, target VARCHAR, r2 DOUBLE, alpha DOUBLE, n_eval INTEGER);
    CREATE TABLE geo_values(run_id VARCHAR, layer INTEGER, kind VARCHAR, unit INTEGER, place INTEGER,
        value DOUBLE, local_i DOUBLE, local_p DOUBLE, quadrant VARCHAR);
    """,
    # 13: sparse-model probes (pipelines/probes.py): MLP activation sparsity per layer and threshold,
    # core-neuron stability and topic similarity, the CE cost of keeping only core neurons, and the
    # expert routing of small MoE models.
    """
    CREATE TABLE probe_sparsity(run_id VARCHAR, model VARCHAR, layer INTEGER, threshold DOUBLE,
        token_fraction DOUBLE, sentence_fraction DOUBLE);
    CREATE TABLE probe_core(run_id VARCHAR, model VARCHAR, layer INTEGER, core_fraction DOUBLE, stability DOUBLE,
        stability_random DOUBLE, same_topic DOUBLE, different_topic DOUBLE, topic_p_value DOUBLE);
    CREATE TABLE probe_core_cost(run_id VARCHAR, model VARCHAR, core_fraction DOUBLE, selection VARCHAR,
        ce DOUBLE, ce_clean DOUBLE, tokens INTEGER);
    CREATE TABLE probe_routing(run_id VARCHAR, model VARCHAR, balance_coefficient DOUBLE, seed INTEGER,
        layer INTEGER, load DOUBLE[], mean_probability DOUBLE[], balance DOUBLE, max_load DOUBLE, entropy DOUBLE,
        entropy_ratio DOUBLE, tokens INTEGER, loss DOUBLE);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
"""What `Store.user_query` runs: SELECT, WITH, FROM-first, DESCRIBE, SHOW, SUMMARIZE (all parse as
SELECT) and EXPLAIN."""
SANDBOX: dict[str, str | bool | int | float | list[str]] = {"enable_external_access": False, "lock_configuration": True}
LOCK_RETRY_SECONDS = 10.0


class StoreError(RuntimeError):
    """The store cannot be used as asked."""


class StoreLockedError(StoreError):
    """Another process holds the store file."""


def _is_lock_conflict(err: Exception) -> bool:
    return "lock" in str(err).lower()


class Reader:
    """Queries over an open read-only connection; has the same `query` as `Store`."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def query(self, sql: str, params: list | tuple | dict | None = None) -> pd.DataFrame:
        try:
            return self.con.execute(sql, params or []).df()
        except duckdb.Error as err:
            raise StoreError(f"query failed: {_one_line(err)}") from err


class _Attachments:
    """Read-only opens as ATTACH on one in-memory DuckDB instance per process.

    `duckdb.connect` builds a database instance each time (~20 ms here, ~8 ms more to close),
    which dominated a feature page; ATTACH ... (READ_ONLY) + DETACH on a long-lived in-memory
    instance opens and releases the same file lock in < 1 ms. The file is still held only for the
    duration of one reader. One lock per path serialises a process's readers and writers of a file
    (DuckDB refuses the same file open in two modes in one process)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Fresh locks and no instance (also in a forked child: the parent's may be held or dead)."""
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._count = 0

    def lock(self, path: Path) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(str(path.resolve()), threading.RLock())

    @contextmanager
    def attach(self, path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor whose default database is `path`, attached read-only; detached on exit."""
        with self._guard:
            if self._instance is None:
                self._instance = duckdb.connect(":memory:")
            self._count += 1
            alias = f"store_{self._count}"
            cursor = self._instance.cursor()
        try:
            cursor.execute(f"ATTACH ? AS {alias} (READ_ONLY)", [str(path)])
        except BaseException:
            cursor.close()
            raise
        try:
            cursor.execute(f"USE {alias}")
            yield cursor
        finally:
            cursor.close()  # also rolls back a transaction a query left aborted
            self._detach(alias)

    def _detach(self, alias: str) -> None:
        """Detach from a fresh cursor; if the instance cannot (a fatal error invalidated it), drop
        it, which releases every file it held, and let the next reader build a new one."""
        with self._guard:
            if self._instance is None:  # another reader already dropped it
                return
            try:
                with self._instance.cursor() as cursor:
                    cursor.execute(f"DETACH DATABASE IF EXISTS {alias}")
            except duckdb.Error:
                self._instance.close()
                self._instance = None


_ATTACHMENTS = _Attachments()
os.register_at_fork(after_in_child=_ATTACHMENTS.reset)


class Store:
    """One DuckDB file per workspace. Every call opens and closes the file (see module docstring)."""

    def __init__(self, path: str | Path | None = None, lock_timeout: float = LOCK_RETRY_SECONDS):
        self.path = Path(path) if path is not None else default_store_path()
        self.lock_timeout = lock_timeout

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def _connect(self, read_only: bool, sandboxed: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file (retrying while another process holds a conflicting lock), close it on exit."""
        lock = _ATTACHMENTS.lock(self.path)
        if not lock.acquire(timeout=self.lock_timeout):
            raise StoreLockedError(f"store {self.path} is busy in this process")
        try:
            with ExitStack() as stack:
                yield self._enter(stack, read_only, sandboxed)
        finally:
            lock.release()

    def _enter(self, stack: ExitStack, read_only: bool, sandboxed: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                return stack.enter_context(self._file(read_only, sandboxed))
            except duckdb.Error as err:
                if not _is_lock_conflict(err):
                    raise StoreError(f"cannot open store {self.path}: {_one_line(err)}") from err
                if time.monotonic() > deadline:
                    raise StoreLockedError(f"store {self.path} is locked by another process") from err
                time.sleep(0.05)

    @contextmanager
    def _file(self, read_only: bool, sandboxed: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        if sandboxed:
            with closing(duckdb.connect(str(self.path), read_only=True, config=SANDBOX)) as con:
                yield con
        elif read_only:
            with _ATTACHMENTS.attach(self.path) as con:
                yield con
        else:
            if not self.path.exists():
                self._create()
            with closing(duckdb.connect(str(self.path))) as con:
                yield con

    def _create(self) -> None:
        """Write a new store's header under a temporary name, then link the file into place.

        DuckDB creates the file before it writes the header, and refuses a file without one ("not a
        valid DuckDB database file"): a command killed in between left an empty store that every later
        command refused. A link, unlike a rename, keeps a store another process created meanwhile. A
        kill here leaves at most the temporary file (named by process, so no live creator's)."""
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        temp.unlink(missing_ok=True)   # a killed process's that had this id
        try:
            duckdb.connect(str(temp)).close()
            with suppress(FileExistsError):
                os.link(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection on a migrated schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect(read_only=False) as con:
            self._migrate(con)
            yield con

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER)")
        current = self._supported_version(con)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            con.execute("BEGIN TRANSACTION")
            con.execute(MIGRATIONS[version - 1])
            con.execute("INSERT INTO schema_version VALUES (?)", [version])
            con.execute("COMMIT")

    def user_query(self, sql: str, params: list | tuple | dict | None = None) -> pd.DataFrame:
        """SQL a user typed (`workbench sql`, `wb.sql`): one read statement, checked before it runs,
        on a connection that can write neither the store nor any other file (read-only, external
        access off, configuration locked), so no DETACH/ATTACH, COPY or EXPORT can get round it."""
        check_read_statement(sql)
        if not self.path.exists():
            raise StoreError(f"no store at {self.path}")
        with self._connect(read_only=True, sandboxed=True) as con:
            try:
                return con.execute(sql, params or []).df()
            except duckdb.Error as err:
                raise StoreError(f"query failed: {_one_line(err)}") from err

    def query(self, sql: str, params: list | tuple | dict | None = None) -> pd.DataFrame:
        """Run a read-only query and return a DataFrame (an absent store reads as empty)."""
        with self.reader() as reader:
            return reader.query(sql, params)

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """One read-only open of the file for several queries (a page's reads), closed on exit.

        An absent store, or one from an older schema version, is created or migrated first (briefly
        taking the write lock)."""
        if not self.path.exists():
            self.init()
        with self._connect(read_only=True) as con:
            if self._supported_version(con) == SCHEMA_VERSION:
                yield Reader(con)
                return
        self.init()
        with self._connect(read_only=True) as con:
            yield Reader(con)

    def _supported_version(self, con: duckdb.DuckDBPyConnection) -> int:
        """The schema version; StoreError when it is newer than this code knows."""
        current = _schema_version(con)
        if current > SCHEMA_VERSION:
            raise StoreError(f"store {self.path} has schema version {current}, newer than this workbench "
                             f"supports ({SCHEMA_VERSION}); upgrade the workbench")
        return current

    def init(self) -> None:
        with self.writer():
            pass

    # -- runs --------------------------------------------------------------------------------
    def run_status(self, run_id: str) -> str | None:
        df = self.query("SELECT status FROM runs WHERE run_id = ?", [run_id])
        return None if df.empty else str(df["status"].iloc[0])

    def finished(self, run_id: str) -> bool:
        """True (and says so) when the run already finished: a pipeline then returns without work."""
        done = self.run_status(run_id) == "finished"
        if done:
            print(f"{run_id} already finished")
        return done

    def begin_run(self, run_id: str, kind: str, config: Mapping[str, Any]) -> bool:
        """Record a run as running. Returns False when it already finished (the caller does nothing)."""
        with self.writer() as con:
            row = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
            if row and row[0] == "finished":
                return False
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
            con.execute("INSERT INTO runs VALUES (?, ?, ?, 'running', ?, NULL, NULL)",
                        [run_id, kind, json.dumps(config, default=str), _now()])
        return True

    @contextmanager
    def running(self, run_id: str, kind: str, config: Mapping[str, Any]) -> Iterator[None]:
        """A run's lifecycle: marked running on entry; an error inside marks it failed, Ctrl-C or
        SIGTERM (see cli.main) marks it and its unfinished sub-runs (`{run_id}/...`) interrupted, and
        the exception propagates. A rerun resumes or replaces them. The block ends by publishing."""
        self.begin_run(run_id, kind, config)
        try:
            yield
        except KeyboardInterrupt:
            self.interrupt_run(run_id)
            raise
        except BaseException as err:
            with suppress(StoreError, duckdb.Error):   # a store that cannot be written keeps its `running` row
                self.fail_run(run_id, repr(err))
            raise

    def interrupt_run(self, run_id: str) -> None:
        with self.writer() as con:
            con.execute("UPDATE runs SET status = 'interrupted', error = 'interrupted', finished_at = ? "
                        "WHERE (run_id = ? OR starts_with(run_id, ?)) AND status = 'running'",
                        [_now(), run_id, run_id + "/"])

    def fail_run(self, run_id: str, error: str) -> None:
        with self.writer() as con:
            con.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE run_id = ?",
                        [error[-2000:], _now(), run_id])

    def publish(self, run_id: str, tables: Mapping[str, pd.DataFrame | pa.Table], finish: bool = True) -> None:
        """Replace the run's rows in each table and (optionally) mark it finished, in one transaction."""
        with self.writer() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for name, rows in tables.items():
                    self._replace_rows(con, run_id, name, rows)
                if finish:
                    con.execute("UPDATE runs SET status = 'finished', finished_at = ?, error = NULL "
                                "WHERE run_id = ?", [_now(), run_id])
                con.execute("COMMIT")
            except Exception as err:
                with suppress(duckdb.Error):   # an aborted transaction (full disk, I/O error) refuses ROLLBACK
                    con.execute("ROLLBACK")
                if isinstance(err, duckdb.Error):
                    raise StoreError(f"publishing {run_id} failed, nothing was written: {err}") from err
                raise

    @staticmethod
    def _replace_rows(con: duckdb.DuckDBPyConnection, run_id: str, table: str, rows) -> None:
        columns = [r[0] for r in con.execute(f"DESCRIBE {_table_name(con, table)}").fetchall()]
        staged = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, preserve_index=False)
        missing = set(columns) - set(staged.column_names) - {"run_id"}
        if missing:
            raise StoreError(f"rows for {table} lack columns {sorted(missing)}")
        if "run_id" not in staged.column_names:
            staged = staged.append_column("run_id", pa.array([run_id] * staged.num_rows, pa.string()))
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        con.register("staged_rows", staged)
        try:
            con.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM staged_rows")
        finally:
            with suppress(duckdb.Error):   # after a failed insert the aborted transaction refuses this too
                con.unregister("staged_rows")


def check_read_statement(sql: str) -> None:
    """StoreError unless `sql` is exactly one statement of a READ_STATEMENTS type."""
    if not isinstance(sql, str):
        raise StoreError(f"a query must be text, got {type(sql).__name__} {sql!r}")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise StoreError(f"query does not parse: {_one_line(err)}") from err
    if len(statements) != 1:
        raise StoreError(f"one statement at a time, got {len(statements)}")
    kind = statements[0].type
    if kind not in READ_STATEMENTS:
        raise StoreError(f"only read queries (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) are allowed, "
                         f"got {kind.name}")


def _one_line(err: duckdb.Error) -> str:
    """A DuckDB error as one line: its message, without the excerpt of the query and the caret
    under it that DuckDB adds on lines of their own."""
    message = re.split(r"\n\s*LINE \d+:", str(err))[0]
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The store's schema version on an open connection (0 before the first migration)."""
    try:
        row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        return (row[0] if row else 0) or 0
    except duckdb.CatalogException:
        return 0


def _table_name(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """Check a table name against the catalogue before it is put into SQL text."""
    known = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if table not in known:
        raise StoreError(f"unknown table {table!r}")
    return table


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
