"""Malformed input (#21): CLI flags, TOML config files, notebook/API calls, stored files and app inputs.

Every case gives one clear line that names what is wrong (the CLI: exit 2 and one `error:` line on
stderr; the API and the app: a one-line exception, or an empty result where "nothing matches" is the
answer), and leaves the store as it was: a checksum of every table's rows is compared before and
after, so a write that an error follows is caught, not only a new row. The store is a realistic one
(tests/app/store_builder.py: two dictionaries on the tiny model with feature pages, explanations,
steering, unlearning, circuit, geo and probe runs). Cases run in-process and fail before real work;
those that need a model use the tiny one.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import signal
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import workbench as wb
from app import data
from tests.app.store_builder import build_store
from workbench import cli, jobs, queries
from workbench.store import Store, StoreError

HOOK = "blocks.0.hook_resid_post"
ERROR_LINE = re.compile(r"^(error: |workbench( [\w-]+)*: error: )")
"""Ours (`error: ...`) or argparse's (`workbench collect: error: ...`)."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store every case starts from (copied per test), with one finished run in `runs`."""
    folder = tmp_path_factory.mktemp("malformed")
    store = build_store(folder / "template.duckdb", folder / "saes").store
    store.begin_run("collect-done", "collect", {"tokens": 10})
    store.publish("collect-done", {})
    return store.path


@pytest.fixture
def store_path(data_dir: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the template in this test's data folder, which is also the working directory."""
    monkeypatch.chdir(data_dir)
    path = data_dir / "w.duckdb"
    shutil.copyfile(template, path)
    return path


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Row count and an order-free checksum of the rows of every table."""
    with closing(duckdb.connect(str(path), read_only=True)) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*), coalesce(sum(hash(t)), 0) FROM {t} t" for t in tables)
        return {table: (rows, checksum) for table, rows, checksum in con.execute(sql).fetchall()}


def run_cli(argv: list[str], store: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """`workbench --store STORE ARGV` in-process: (exit code, non-empty stderr lines)."""
    capsys.readouterr()
    previous = signal.getsignal(signal.SIGTERM)   # main() installs its own handler
    try:
        code = cli.main(["--store", str(store), *argv])
    except SystemExit as exit_:   # argparse
        code = exit_.code
    finally:
        signal.signal(signal.SIGTERM, previous)
    return int(code or 0), [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_one_error_line(code: int, lines: list[str], fragments: list[str]) -> None:
    assert code == 2, lines
    assert len(lines) == 1, "\n".join(lines)
    assert ERROR_LINE.match(lines[0]), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def cli_fails_cleanly(argv: list[str], store: Path, capsys: pytest.CaptureFixture[str], fragments: list[str]) -> None:
    """Exit 2, one error line holding every fragment, and the store's rows unchanged."""
    before = snapshot(store)
    assert_one_error_line(*run_cli(argv, store, capsys), fragments)
    assert snapshot(store) == before


def test_the_snapshot_sees_one_changed_value(store_path: Path) -> None:
    """The store check of every case below can fail: one value changed in one row changes it."""
    before = snapshot(store_path)
    with closing(duckdb.connect(str(store_path))) as con:
        con.execute("UPDATE feature_stats SET freq = freq + 1e-9 WHERE dict_id = 'tiny-topk' AND feature = 3")
    after = snapshot(store_path)
    assert {t for t in before if before[t] != after[t]} == {"feature_stats"}
    assert before["runs"][0] == 1 and before["feature_stats"][0] == 256


# -- CLI flags ----------------------------------------------------------------------------------


def flag(*argv: str, expect: list[str]) -> Any:
    return pytest.param(list(argv), expect, id=" ".join(argv))


CLI_FLAGS = [
    flag("collect", "--tokens", "x", expect=["--tokens", "invalid int value: 'x'"]),
    flag("collect", "--tokens", "-5", expect=["tokens must be >= 1", "-5"]),
    flag("collect", "--batch-size", "0", expect=["batch_size must be >= 1"]),
    flag("collect", "--split", "test", expect=["split", "'test'"]),
    flag("collect", "--context", "0", expect=["context must be >= 1, got 0"]),
    flag("collect", "--cache", "maybe", expect=["--cache", "'maybe'"]),
    flag("collect", "--model", "tiny", "--hook-point", "garbage", expect=["unknown hook point 'garbage'"]),
    flag("collect", "--model", "tiny", "--hook-point", "blocks.x.hook_resid_post",
         expect=["unknown hook point 'blocks.x.hook_resid_post'"]),
    flag("collect", "--model", "tiny", "--hook-point", HOOK, "--corpus", "wiki-sample+nope",
         expect=["unknown corpus 'nope'"]),
    flag("collect", "--model", "tiny", "--hook-point", "blocks.9.hook_resid_post", expect=["layer 9 out of range"]),
    flag("collect", "--model", "tiny", "--layout", "zigzag", expect=["layout must be packed or chat"]),
    flag("collect", "--bogus", "1", expect=["unrecognized arguments: --bogus 1"]),
    flag("train", "--architecture", "relu", "--sae.k", "8", expect=["unrecognized arguments: --sae.k 8"]),
    flag("train", "--tokens", "1.5", expect=["--tokens", "'1.5'"]),
    flag("train", "--strategy", "nope", expect=["unknown strategy 'nope'"]),
    flag("train", "--bias-adaptation", "maybe", expect=["bias_adaptation", "'maybe'"]),
    flag("train", "--trainer.lr", "-1", expect=["lr must be positive", "-1"]),
    flag("train", "--trainer.lr", "abc", expect=["--trainer.lr", "'abc'"]),
    flag("train", "--sae.bogus", "1", expect=["--sae.bogus"]),
    flag("train", "--model", "tiny", "--hook-point", HOOK, "--sae.k", "0", expect=["k must be in [1, d_sae=512]"]),
    flag("train", "--buffer-tokens", "10", expect=["buffer_tokens"]),
    flag("train", "--token-rule.special-tokens", "maybe", expect=["--token-rule.special-tokens", "'maybe'"]),
    flag("train", "--model", "tiny", "--hook-point", "blocks.7.hook_resid_post", expect=["layer 7 out of range"]),
    flag("features", expect=["dict_id is required"]),
    flag("features", "--dict-id", "nope", expect=["unknown dictionary 'nope'"]),
    flag("features", "--dict-id", "tiny-topk", "--n-top", "0", expect=["n_top must be >= 1"]),
    flag("features", "--dict-id", "tiny-topk", "--window-before", "-1", expect=["window_before must be >= 0, got -1"]),
    flag("evaluate", expect=["dict_id", "--all"]),
    flag("evaluate", "--dict-id", "nope", expect=["unknown dictionary 'nope'"]),
    flag("evaluate", "--dict-id", "tiny-topk", "--groups", "core,nope", expect=["unknown metric groups ['nope']"]),
    flag("evaluate", "--dict-id", "tiny-topk", "--ks", "1,x", expect=["--ks", "'1,x'"]),
    flag("evaluate", "--all", "true", "--ks", "1,-2", expect=["ks must be positive integers"]),
    flag("evaluate", "--dict-id", "tiny-topk", "--stability-threshold", "1.5", expect=["stability_threshold", "1.5"]),
    flag("evaluate", "--dict-id", "tiny-topk", "--groups", "probing", "--ks", "1,500", expect=["k=500", "tiny-topk"]),
    flag("evaluate", "--dict-id", "tiny-topk", "--groups", "autointerp", "--interpret-score-examples", "1",
         expect=["autointerp group", "n_test_top (2) must be in 0..n_test (1)", "interpret_score_examples = 1"]),
    flag("demo", "--explain-examples", "3", expect=["demo's auto-interpretation",
                                                    "n_top_train (4) must be in 0..n_train (3)",
                                                    "explain_examples = 3 (interpret's n_train)"]),
    flag("demo", "--score-examples", "1", expect=["n_test_top (2) must be in 0..n_test (1)", "score_examples = 1"]),
    flag("demo", "--interpret-features", "-1", expect=["interpret_features must be >= 0, got -1"]),
    flag("interpret", "--dict-id", "nope", expect=["unknown dictionary 'nope'"]),
    flag("interpret", "--dict-id", "tiny-topk", "--features", "abc", expect=["features", "'abc'"]),
    flag("interpret", "--dict-id", "tiny-topk", "--features", "0:500", expect=["out of range", "0..127"]),
    flag("interpret", "--dict-id", "tiny-topk", "--scorers", "nope", expect=["unknown scorers ['nope']"]),
    flag("interpret", "--dict-id", "tiny-topk", "--llm.timeout-s", "x", expect=["--llm.timeout-s", "'x'"]),
    flag("interpret", "--dict-id", "tiny-topk", "--server.backend", "nope", expect=["backend", "'nope'"]),
    flag("unlearn", "--dict-id", "tiny-topk", "--concepts", "sport", expect=["concept 'sport'", "name=corpus:label"]),
    flag("unlearn", "--dict-id", "tiny-topk", "--score", "nope", expect=["score", "'nope'"]),
    flag("unlearn", "--dict-id", "tiny-topk", "--diffmeans-scale", "inf", expect=["diffmeans_scale", "inf"]),
    flag("unlearn", "--dict-id", "tiny-topk", "--concepts", "a=bbc:sport", "--features", "128",
         expect=["features [128] do not exist", "tiny-topk has 128"]),
    flag("unlearn", "--dict-id", "tiny-topk", "--features", "1,x", expect=["--features", "'1,x'"]),
    flag("circuits", "--tasks", "nope", expect=["tasks", "'nope'"]),
    flag("circuits", "--circuit-fraction", "1.5", expect=["circuit_fraction", "1.5"]),
    flag("circuits", "--candidates", "5", "--pairs", "10", expect=["candidates (5)", "pairs (10)"]),
    flag("circuits", "--sae-prompts", "x", expect=["--sae-prompts", "'x'"]),
    flag("circuits", "--head-output", "nope", expect=["'nope' is not an attention-head output"]),
    flag("geo", "--layers", "a,b", expect=["--layers", "'a,b'"]),
    flag("geo", "--sae-layer", "3", expect=["sae_layer (3)"]),
    flag("geo", "--max-p", "2", expect=["max_p", "2.0"]),
    flag("geo", "--model", "tiny", "--layers", "7", "--sae-layer", "7", expect=["layers [7] out of range"]),
    flag("probes", "--thresholds", "-1", expect=["thresholds [-1.0]"]),
    flag("probes", "--core-fractions", "1.5", expect=["core fraction 1.5"]),
    flag("probes", "--model", "tiny", "--layers", "9", expect=["layers [9] out of range"]),
    flag("probes", "--moe.experts", "0", expect=["experts must be >= 1"]),
    flag("sae-tune", "--seeds", "1,1", expect=["seeds", "[1, 1]"]),
    flag("sae-tune", "--eval-fraction", "0", expect=["eval_fraction", "0.0"]),
    flag("sae-tune", "--model", "tiny", "--layer", "9", expect=["layer 9 does not exist"]),
    flag("compare-layers", "--anchors", "10", "--paired-tokens", "5", expect=["anchors (10)", "paired_tokens (5)"]),
    flag("compare-layers", "--itda.threshold", "-1", expect=["threshold", "-1.0"]),
    flag("compare-layers", "--model-a", "nope", expect=["unknown model 'nope'"]),
    flag("compare-layers", "--model-a", "tiny", "--model-b", "tiny", "--layers", "2",
         expect=["layers [2] do not exist"]),
    flag("lora", expect=["--name"]),
    flag("lora", "--name", "x", "--rank", "0", expect=["rank must be >= 1"]),
    flag("lora", "--name", "bad name!", "--model", "tiny", expect=["variant name 'bad name!'"]),
    flag("lora", "--name", "x", "--model", "tiny", "--targets", "nope_proj", expect=["['nope_proj']"]),
    flag("steer-markup", "--dict-id", "nope", expect=["unknown dictionary 'nope'"]),
    flag("steer-markup", "--dict-id", "tiny-topk", "--markup", "robot", expect=["markup", "['robot']"]),
    flag("steer-markup", "--dict-id", "tiny-topk", "--alphas", "1,inf", expect=["alphas", "inf"]),
    flag("steer-markup", "--dict-id", "tiny-topk", "--corpus", "wiki-sample",
         expect=["corpus 'wiki-sample' is not a chat corpus"]),
    flag("check-examples", "--dict-id", "nope", expect=["unknown dictionary 'nope'"]),
    flag("check-examples", "--dict-id", "tiny-topk", "--rtol", "-1", expect=["rtol", "-1.0"]),
    flag("judge-check", "--windows", "1", expect=["windows must be >= 2"]),
    flag("serve", "--port", "70000", expect=["port", "70000"]),
    flag("fetch", "--corpora", "nope", "--no-model", expect=["unknown corpus 'nope'"]),
    flag("export", "--out", "exported", "--tables", "runs; DROP TABLE runs", expect=["'runs; DROP TABLE runs'"]),
    flag("runs", "--migrate", "maybe", expect=["unrecognized arguments: maybe"]),
    flag("nope", expect=["invalid choice: 'nope'"]),
]


@pytest.mark.parametrize(("argv", "expect"), CLI_FLAGS)
def test_a_bad_flag_is_one_line_and_the_store_is_unchanged(store_path, capsys, argv, expect):
    cli_fails_cleanly(argv, store_path, capsys, expect)


def test_help_still_prints_the_usage(capsys):
    """The one-line parser errors keep `--help` whole."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["collect", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: workbench collect") and "--shard-rows" in out


# -- TOML config files --------------------------------------------------------------------------


def config(command: str, content: str | bytes | None, expect: list[str], *extra: str) -> Any:
    """`content` None: no file; "/": a folder where the file should be."""
    label = "missing" if content is None else "folder" if content == "/" else repr(content)[:40]
    return pytest.param([command, *extra], content, expect, id=f"{command} {label}")


CONFIG_FILES = [
    config("collect", 'batch_size = "8"\n', ["{file}", "batch_size expects int, got str '8'"]),
    config("collect", "model = 5\n", ["{file}", "model expects str, got int 5"]),
    config("collect", "tokens = 1e400\n", ["{file}", "tokens expects int, got float inf"]),
    config("train", "[trainer]\nwarmup_steps = 1.5\n", ["{file}", "trainer.warmup_steps expects int, got float 1.5"]),
    config("train", "bogus = 1\n", ["unknown TrainDictionaryConfig fields: ['bogus']"]),
    config("train", "[trainer]\nbogus = 1\n", ["unknown trainer fields: bogus"]),
    config("train", "[trainer\nlr = 1\n", ["{file}", "is not valid TOML"]),
    config("collect", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["{file}", "is not UTF-8 text"]),
    config("train", None, ["{file}", "cannot be read: No such file or directory"]),
    config("train", "/", ["{file}", "cannot be read: Is a directory"]),
    config("train", "trainer = 3\n", ["trainer must be a table", "got 3"]),
    config("train", "[[trainer]]\nlr = 1e-3\n", ["trainer must be a table", "[{'lr': 0.001}]"]),
    config("train", "[sae]\nk = 1.5\n", ["{file}", "sae.k expects int, got float 1.5"]),
    config("train", 'architecture = "nope"\n', ["unknown architecture 'nope'"]),
    config("geo", 'layers = ["a"]\n', ["{file}", "layers expects list[int], got list ['a']"]),
    config("geo", "layers = 3\n", ["{file}", "layers expects list[int], got int 3"]),
    config("evaluate", 'dict_id = "tiny-topk"\nks = [1, "2"]\n', ["{file}", "ks expects list[int]"]),
    config("compare-layers", '[itda]\nl0 = "x"\n', ["{file}", "itda.l0 expects int, got str 'x'"]),
    config("interpret", "[trainer]\nlr = 1\n", ["unknown InterpretConfig fields: ['trainer']"],
           "--dict-id", "tiny-topk"),
]


@pytest.mark.parametrize(("argv", "content", "expect"), CONFIG_FILES)
def test_a_bad_config_file_is_one_line_and_the_store_is_unchanged(store_path, capsys, argv, content, expect):
    file = store_path.parent / "job.toml"
    if content == "/":
        file.mkdir()
    elif isinstance(content, bytes):
        file.write_bytes(content)
    elif content is not None:
        file.write_text(content)
    argv = [argv[0], "--config", str(file), *argv[1:]]
    cli_fails_cleanly(argv, store_path, capsys, [e.replace("{file}", str(file)) for e in expect])


# -- notebook / API calls -----------------------------------------------------------------------


def api(call: Callable[[Store], Any], error: type[Exception], expect: list[str], label: str) -> Any:
    return pytest.param(call, error, expect, id=label)


API_CALLS = [
    api(lambda s: jobs.run_job("nope", s), LookupError, ["unknown job 'nope'", "collect"], "run_job unknown job"),
    api(lambda s: jobs.run_job("collect", s, bogus=1), ValueError, ["['bogus']"], "unknown field"),
    api(lambda s: jobs.run_job("collect", s, tokens="many"), ValueError, ["tokens expects int"], "str for int"),
    api(lambda s: jobs.run_job("collect", s, tokens=True), ValueError, ["tokens expects int, got bool"],
        "bool for int"),
    api(lambda s: jobs.run_job("collect", s, tokens=None), ValueError, ["tokens expects int, got NoneType"],
        "None for int"),
    api(lambda s: jobs.run_job("geo", s, layers=["a"]), ValueError, ["layers expects list[int], got list ['a']"],
        "text in an int list"),
    api(lambda s: jobs.run_job("geo", s, layers="1,2"), ValueError, ["layers expects list[int], got str '1,2'"],
        "text for a list"),
    api(lambda s: jobs.run_job("circuits", s, seeds=[0, 1.5]), ValueError, ["seeds expects list[int]"],
        "float in an int list"),
    api(lambda s: jobs.run_job("geo", s, max_p=float("nan")), ValueError, ["max_p", "nan"], "nan fraction"),
    api(lambda s: jobs.run_job("train", s, trainer="fast"), ValueError, ["trainer must be a table", "'fast'"],
        "text for a group"),
    api(lambda s: jobs.run_job("train", s, trainer={"lr": "fast"}), ValueError, ["trainer.lr expects float"],
        "str in a group"),
    api(lambda s: jobs.run_job("train", s, sae={"k": "8"}), ValueError, ["sae.k expects int"], "str in the sae group"),
    api(lambda s: wb.collect(s, model="tiny", tokens=0), ValueError, ["tokens must be >= 1, got 0"], "wb.collect"),
    api(lambda s: s.user_query(5), StoreError, ["a query must be text, got int 5"], "user_query not text"),
    api(lambda s: s.user_query("WITH x AS (DELETE FROM runs RETURNING *) SELECT * FROM x"), StoreError,
        ["read-only"], "user_query DELETE inside WITH"),
    api(lambda s: s.user_query("EXPLAIN ANALYZE DELETE FROM runs"), StoreError, ["read-only"],
        "user_query EXPLAIN ANALYZE DELETE"),
    api(lambda s: s.user_query("SELECT * FROM read_text('/etc/hostname')"), StoreError,
        ["query failed", "/etc/hostname"], "user_query read_text"),
    api(lambda s: wb.sql("SELECT * FROM runs WHERE run_id = ?", [1, 2], store=s), StoreError, ["query failed"],
        "wb.sql wrong parameter count"),
    api(lambda s: wb.dictionary("nope", s), LookupError, ["unknown dictionary 'nope'"], "wb.dictionary unknown"),
    api(lambda s: wb.dictionary("tiny-topk", s).histogram(10_000), LookupError, ["feature 10000 of tiny-topk"],
        "histogram out of range"),
    api(lambda s: wb.dictionary("tiny-topk", s).feature("x"), ValueError, ["a feature is a whole number, got 'x'"],
        "feature not a number"),
]


@pytest.mark.parametrize(("call", "error", "expect"), API_CALLS)
def test_a_bad_api_call_raises_one_clear_line_and_the_store_is_unchanged(store_path, call, error, expect):
    before = snapshot(store_path)
    with pytest.raises(error) as raised:
        call(Store(store_path))
    message = str(raised.value.args[0])
    assert "\n" not in message and all(e in message for e in expect), message
    assert snapshot(store_path) == before


@pytest.mark.parametrize(("query", "expect"), [
    ("TRUNCATE runs", ["only read queries", "got DELETE"]),
    ("SELEC 1", ["query does not parse", "SELEC"]),
    ("SELECT * FROM nope", ["query failed", "nope"]),
    ("SELECT 1; DROP TABLE runs", ["one statement at a time, got 2"]),
    ("", ["one statement at a time, got 0"]),
])
def test_workbench_sql_refuses_in_one_line(store_path, capsys, query, expect):
    cli_fails_cleanly(["sql", query], store_path, capsys, expect)


def test_a_parameter_that_looks_like_sql_is_only_a_value(store_path):
    before = snapshot(store_path)
    found = wb.sql("SELECT run_id FROM runs WHERE run_id = ?", ["x' OR '1'='1"], store=store_path)
    assert found.empty and snapshot(store_path) == before


# -- stored files: a registered dictionary's folder ---------------------------------------------


class Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        content = json.loads((folder / name).read_text())
        edit(content)
        (folder / name).write_text(json.dumps(content))
    return change


def _sidecar_config(**fields: Any) -> Callable[[Path], None]:
    return _edit_json("workbench.json", lambda c: c["config"].update(fields))


def _saelens_only(**fields: Any) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / "workbench.json").unlink()
        _edit_json("cfg.json", lambda c: c.update(fields))(folder)
    return change


def _weights(transform: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / "sae_weights.safetensors"
        path.write_bytes(transform(path.read_bytes()))
    return change


def _tensor(name: str, value: float) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        tensors = load_file(folder / "sae_weights.safetensors")
        tensors[name][0, 0] = value
        save_file(tensors, folder / "sae_weights.safetensors")
    return change


def _torch_save(folder: Path) -> None:
    torch.save({"W_enc": torch.zeros(64, 128)}, folder / "sae_weights.safetensors")


def _only_a_pt_file(folder: Path) -> None:
    (folder / "sae_weights.safetensors").rename(folder / "sae_weights.pt")


def _empty_folder(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


STORED_DICTIONARIES = [
    pytest.param(_weights(lambda b: b"\0" * 40), ["sae_weights.safetensors", "corrupted"], id="zeroed weights"),
    pytest.param(_weights(lambda b: b[: len(b) // 2]), ["sae_weights.safetensors", "corrupted"],
                 id="truncated weights"),
    pytest.param(_torch_save, ["sae_weights.safetensors", "not a safetensors file"], id="torch.save pickle as weights"),
    pytest.param(_only_a_pt_file, ["missing weights file", "sae_weights.safetensors"], id="only a .pt file"),
    pytest.param(_tensor("W_enc", float("nan")), ["W_enc contains NaN or inf"], id="NaN weights"),
    pytest.param(_sidecar_config(d_sae=64), ["W_enc has shape (64, 128)", "(64, 64)"],
                 id="shapes disagree with config"),
    pytest.param(_sidecar_config(d_sae="128"), ["workbench.json", "d_sae expects int, got str '128'"],
                 id="sidecar string for d_sae"),
    pytest.param(_sidecar_config(k="8"), ["workbench.json", "k expects int, got str '8'"], id="sidecar string for k"),
    pytest.param(_sidecar_config(bogus=1), ["workbench.json", "unknown topk config fields: bogus"],
                 id="sidecar unknown field"),
    pytest.param(_edit_json("workbench.json", lambda c: c.update(config=[1, 2])),
                 ["workbench.json", "the config must be a JSON object", "[1, 2]"], id="sidecar config is a list"),
    pytest.param(_edit_json("workbench.json", lambda c: c.update(architecture="nope")), ["unknown architecture 'nope'"],
                 id="sidecar unknown architecture"),
    pytest.param(lambda f: (f / "workbench.json").write_text("{nope"), ["workbench.json", "is not valid JSON"],
                 id="sidecar not JSON"),
    pytest.param(lambda f: (f / "workbench.json").write_bytes(b"\xff\xfe\0{"), ["workbench.json", "is not UTF-8 text"],
                 id="sidecar binary"),
    pytest.param(_saelens_only(d_sae="128"), ["cfg.json", "d_sae expects int, got str '128'"],
                 id="cfg.json string for d_sae"),
    pytest.param(_saelens_only(architecture="nope"), ["SAELens architecture 'nope'"],
                 id="cfg.json unknown architecture"),
    pytest.param(_empty_folder, ["holds no saved dictionary"], id="empty folder"),
]


def register_copy(store_path: Path, dict_id: str) -> Path:
    """Copy the template's tiny-topk folder and register it in the store as `dict_id`; its folder."""
    store = Store(store_path)
    row = store.query("SELECT * FROM dictionaries WHERE dict_id = 'tiny-topk'").iloc[0].to_dict()
    folder = store_path.parent / dict_id
    shutil.copytree(row["path"], folder)
    run_id = f"register-{dict_id}"
    store.publish(run_id, {"dictionaries": pd.DataFrame([{**row, "run_id": run_id, "dict_id": dict_id,
                                                           "path": str(folder)}])})
    return folder


@pytest.mark.parametrize(("corrupt", "expect"), STORED_DICTIONARIES)
def test_a_damaged_dictionary_folder_is_named_in_one_line(store_path, capsys, corrupt, expect):
    corrupt(register_copy(store_path, "damaged"))
    cli_fails_cleanly(["features", "--dict-id", "damaged"], store_path, capsys, expect)


def test_a_pickle_where_the_weights_belong_is_refused_unopened(store_path, capsys):
    marker = store_path.parent / "unpickled"
    folder = register_copy(store_path, "pickled")
    (folder / "sae_weights.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    cli_fails_cleanly(["features", "--dict-id", "pickled"], store_path, capsys,
                      [str(folder / "sae_weights.safetensors"), "not a safetensors file"])
    assert not marker.exists()
    pickle.loads((folder / "sae_weights.safetensors").read_bytes())   # the payload does work when unpickled
    assert marker.exists()


# -- stored files: the store itself and the activation cache ------------------------------------


def _newer_schema(path: Path, template: Path) -> None:
    shutil.copyfile(template, path)
    with closing(duckdb.connect(str(path))) as con:
        con.execute("INSERT INTO schema_version VALUES (999)")


STORE_FILES = [
    pytest.param(lambda p, t: p.write_text("not a database\n"), ["runs"], ["not a valid DuckDB database file"],
                 id="text file"),
    pytest.param(lambda p, t: p.write_bytes(b""), ["runs"], ["not a valid DuckDB database file"], id="empty file"),
    pytest.param(lambda p, t: p.write_bytes(t.read_bytes()[:5000]), ["sql", "SELECT 1"], ["Could not read"],
                 id="truncated store"),
    pytest.param(lambda p, t: p.mkdir(), ["runs"], ["Is a directory"], id="folder"),
    pytest.param(_newer_schema, ["collect", "--model", "tiny"], ["schema version 999", "upgrade the workbench"],
                 id="newer schema"),
]


def _file_state(path: Path) -> bytes | list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize(("make", "argv", "expect"), STORE_FILES)
def test_a_store_file_that_is_not_a_store_is_named_and_left_alone(data_dir, template, capsys, make, argv, expect):
    path = data_dir / "w.duckdb"
    make(path, template)
    before = _file_state(path)
    assert_one_error_line(*run_cli(argv, path, capsys), [str(path), *expect])
    assert _file_state(path) == before and sorted(p.name for p in data_dir.iterdir()) == ["cache", "w.duckdb"]


COLLECT = ["collect", "--model", "tiny", "--hook-point", HOOK, "--corpus", "wiki-sample", "--context", "32",
           "--batch-size", "2", "--shard-rows", "64"]


def _first_shard(manifest: Path) -> Path:
    return manifest.parent / json.loads(manifest.read_text())["shards"][0]["file"]


@pytest.mark.parametrize(("damaged", "expect"), [
    pytest.param(lambda m: m, ["manifest.json", "is unreadable"], id="manifest not JSON"),
    pytest.param(_first_shard, ["shard_00000.safetensors", "is unreadable"], id="shard zeroed"),
])
def test_a_damaged_activation_cache_fails_before_the_run_starts(store_path, capsys, damaged, expect):
    assert run_cli([*COLLECT, "--tokens", "200"], store_path, capsys)[0] == 0
    [manifest] = (store_path.parent / "cache" / "activations").glob("*/manifest.json")
    target = damaged(manifest)
    target.write_bytes(b"\0" * 30)
    cli_fails_cleanly([*COLLECT, "--tokens", "300"], store_path, capsys, [str(target), *expect, str(manifest.parent)])


# -- app inputs ---------------------------------------------------------------------------------


def empty(call: Callable[[Store], Any], label: str) -> Any:
    """An input that matches nothing: an empty answer, not an error (and no injected SQL runs)."""
    return pytest.param(call, None, [], id=label)


def refused(call: Callable[[Store], Any], error: type[Exception], expect: list[str], label: str) -> Any:
    return pytest.param(call, error, expect, id=label)


INJECTED = "x' OR '1'='1' --"
APP_INPUTS = [
    empty(lambda s: data.feature_page(s, "nope", 3), "page of an unknown dictionary"),
    empty(lambda s: data.feature_page(s, "tiny-topk", -1), "page of feature -1"),
    empty(lambda s: data.feature_page(s, "tiny-topk", 10**12), "page of a feature past the end"),
    empty(lambda s: data.feature_page(s, INJECTED, 3), "page of an injected dictionary id"),
    refused(lambda s: data.feature_page(s, "tiny-topk", float("nan")), ValueError, ["whole number, got nan"],
            "page of feature NaN"),
    refused(lambda s: data.feature_page(s, "tiny-topk", "3; DROP TABLE feature_stats"), ValueError,
            ["'3; DROP TABLE feature_stats'"], "page of an injected feature"),
    empty(lambda s: data.search_features(s, "tiny-topk", "'); DROP TABLE explanations; --"), "injected search text"),
    empty(lambda s: data.search_features(s, INJECTED, ""), "search of an injected dictionary id"),
    empty(lambda s: data.search_features(s, "tiny-topk", "\u00b2"), "search for a superscript digit"),
    empty(lambda s: data.search_features(s, "tiny-topk", "9" * 30), "search for a feature id past int64"),
    refused(lambda s: data.search_features(s, "tiny-topk", "", limit=-1), StoreError, ["LIMIT", "negative"],
            "search with a negative limit"),
    empty(lambda s: data.dictionary_ids(s, INJECTED), "dictionaries of an injected model"),
    empty(lambda s: queries.search_explanations(s, "tiny-topk", "') OR 1=1 --"), "injected explanation search"),
    refused(lambda s: data.geo_unit_map(s, "geo-test", "garbage"), ValueError,
            ["unit 'garbage' must read layer/kind/index"], "geo unit malformed"),
    refused(lambda s: data.geo_unit_map(s, "geo-test", "1/feature' OR 1=1 --/3"), LookupError,
            ["no stored values for unit", "OR 1=1"], "geo unit injected kind"),
    refused(lambda s: data.probe_table(s, "probes-test", "runs; DROP TABLE runs"), LookupError,
            ["unknown probe table 'runs; DROP TABLE runs'"], "probe table injected"),
    refused(lambda s: data.probe_layer(s, "probes-test", "0; DROP TABLE runs"), StoreError,
            ["query failed", "'0; DROP TABLE runs'"], "probe layer injected"),
    refused(lambda s: data.unlearn_dictionary(s, INJECTED), LookupError, ["no unlearn run"], "unlearn run injected"),
    refused(lambda s: data.circuit_heads(s, "circuits-test", "ioi", INJECTED), LookupError, ["no head scores"],
            "circuit method injected"),
    refused(lambda s: queries.dictionary_row(s, "tiny-topk' --"), LookupError, ["unknown dictionary"],
            "dictionary row injected"),
]


def _is_empty(result: Any) -> bool:
    return bool(result.empty) if hasattr(result, "empty") else not result


@pytest.mark.parametrize(("call", "error", "expect"), APP_INPUTS)
def test_an_app_input_gives_a_clear_error_or_nothing_and_runs_no_sql(store_path, call, error, expect):
    before = snapshot(store_path)
    if error is None:
        assert _is_empty(call(Store(store_path)))
    else:
        with pytest.raises(error) as raised:
            call(Store(store_path))
        message = str(raised.value.args[0])
        assert "\n" not in message and all(e in message for e in expect), message
    assert snapshot(store_path) == before


def test_the_feature_view_shows_an_infinite_feature_number_as_a_message(store_path):
    """Gradio's number box can send inf; the view must answer with its error box, not raise."""
    from app.views.common import AppContext
    from app.views.features import render

    ctx = AppContext(Store(store_path), live=None, semantic=None)
    message = render(ctx, "tiny-topk", float("inf")).message
    assert 'class="wb-error"' in message and "whole number, got inf" in message
