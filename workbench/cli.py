"""The `workbench` command: one subcommand per pipeline, options generated from its config dataclass.

Pipelines live in `pipelines/` and are looked up by name in `workbench.jobs`, at call time, so
the core library keeps no import-time dependency on them.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from workbench import jobs
from workbench.config import add_arguments, build_config
from workbench.store import Store


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line; argparse's default prints the whole usage first
    (dozens of lines for a pipeline with many flags). Sub-commands get this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _run_pipeline(name: str, args: argparse.Namespace) -> None:
    jobs.run_config(name, build_config(jobs.config_class(name), args, args.config), Store(args.store))


def _fetch(args: argparse.Namespace) -> None:
    from workbench import corpora
    from workbench.models import smollm2_hf_dir

    for name in args.corpora.split(","):
        print(f"corpus {name}: {corpora.fetch_corpus(name)}")
    if not args.no_model:
        print(f"model smollm2-135m-instruct: {smollm2_hf_dir()}")


def _runs(args: argparse.Namespace) -> None:
    store = Store(args.store)
    if args.migrate:
        store.init()
    df = store.query("SELECT run_id, kind, status, started_at, finished_at, error FROM runs ORDER BY started_at")
    print(df.to_string(index=False) if len(df) else "no runs")


def _sql(args: argparse.Namespace) -> None:
    print(Store(args.store).user_query(args.query).to_string(index=False))


def _export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from workbench.export import export_activations, export_tables
    from workbench.paths import cache_dir

    out = Path(args.out)
    tables = export_tables(Store(args.store), out / "store", args.tables.split(",") if args.tables else None)
    print(f"{len(tables)} tables -> {out / 'store'}")
    if not args.no_activations:
        shards = export_activations(cache_dir() / "activations", out / "activations")
        print(f"{len(shards)} activation shards -> {out / 'activations'}")


def _chosen(argv: list[str]) -> dict[str, str]:
    """Values that decide which group flags exist (`--architecture X`: that method's `--sae.*`),
    read from the command line or its `--config` TOML before the parser is built."""
    import tomllib
    from pathlib import Path

    chosen: dict[str, str] = {}
    for flag, key in (("--config", "config"), ("--architecture", "architecture")):
        for i, word in enumerate(argv):
            if word == flag and i + 1 < len(argv):
                chosen[key] = argv[i + 1]
            elif word.startswith(flag + "="):
                chosen[key] = word.split("=", 1)[1]
    config = chosen.pop("config", None)
    if "architecture" not in chosen and config and Path(config).is_file():
        try:
            chosen.update({k: v for k, v in tomllib.loads(Path(config).read_text()).items() if k == "architecture"})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            pass   # reported with the file's name when the config is built
    return chosen


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="workbench", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="DuckDB file (default: data/workbench.duckdb)")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, job in jobs.JOBS.items():
        group, _, leaf = name.rpartition(" ")   # "llm serve" -> `workbench llm serve`
        if group and group not in groups:
            groups[group] = sub.add_parser(group, help=f"{group} commands").add_subparsers(dest="action", required=True)
        p = (groups[group] if group else sub).add_parser(leaf, help=job.help)
        p.add_argument("--config", default=None, help="TOML file with config fields (flags override it)")
        add_arguments(p, jobs.config_class(name), _chosen(sys.argv[1:] if argv is None else argv))
        p.set_defaults(func=lambda a, n=name: _run_pipeline(n, a))
    p = sub.add_parser("fetch", help="download the pinned model and corpora into the cache")
    p.add_argument("--corpora", default="wiki,bbc,sharegpt,rotten-tomatoes,cities")
    p.add_argument("--no-model", action="store_true")
    p.set_defaults(func=_fetch)
    p = sub.add_parser("runs", help="list runs in the store")
    p.add_argument("--migrate", action="store_true", help="migrate the store schema first")
    p.set_defaults(func=_runs)
    p = sub.add_parser("export", help="write the store's tables and the activation cache as Parquet files")
    p.add_argument("--out", required=True, help="folder for store/<table>.parquet and activations/<cache>/")
    p.add_argument("--tables", default="", help="comma-separated tables (default: all)")
    p.add_argument("--no-activations", action="store_true", help="only the store's tables")
    p.set_defaults(func=_export)
    p = sub.add_parser("sql", help="run a read-only SQL query against the store")
    p.add_argument("query")
    p.set_defaults(func=_sql)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser(argv)   # an unknown --architecture is reported here, before its --sae.* flags
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    signal.signal(signal.SIGTERM, _terminate)
    try:
        func(args)
    except KeyboardInterrupt:
        print("interrupted: the run is marked `interrupted`; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends a command the way Ctrl-C does, so its runs are marked interrupted, not left running."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
