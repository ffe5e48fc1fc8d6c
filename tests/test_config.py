"""Config groups: `--group.field` flags, `[group]` TOML tables, per-architecture `--sae.*` help, errors
that name the group and field, and the resolved config stored with the run."""

from __future__ import annotations

import dataclasses
import re

import pytest

from pipelines.autointerp.config import InterpretConfig
from pipelines.train import TrainDictionaryConfig
from workbench import cli, jobs
from workbench.config import build_config, config_id


def parsed(argv: list[str]):
    return cli.build_parser(argv).parse_args(argv)


def test_group_flags_build_nested_configs():
    argv = ["train", "--architecture", "jumprelu", "--sae.l0-coefficient", "0.5", "--trainer.lr", "1e-3",
            "--trainer.warmup-steps", "7", "--tokens", "1000"]
    cfg = build_config(TrainDictionaryConfig, parsed(argv))
    assert cfg.sae == {"l0_coefficient": 0.5} and cfg.tokens == 1000
    assert (cfg.trainer.lr, cfg.trainer.warmup_steps) == (1e-3, 7)
    assert cfg.trainer.checkpoint_every == 100 and cfg.trainer.dead_after_tokens is None   # the pipeline's defaults
    stored = dataclasses.asdict(cfg)
    assert stored["trainer"]["lr"] == 1e-3 and stored["sae"] == {"l0_coefficient": 0.5}


def test_toml_sections_then_flags(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text('architecture = "topk"\ntokens = 2000\n[sae]\nk = 16\n[trainer]\nlr = 2e-3\nlog_every = 5\n')
    cfg = build_config(TrainDictionaryConfig, parsed(["train", "--config", str(toml), "--sae.k", "8"]), toml)
    assert cfg.sae == {"k": 8} and cfg.trainer.lr == 2e-3 and cfg.trainer.log_every == 5 and cfg.tokens == 2000


def test_help_lists_the_chosen_architectures_fields(capsys):
    for architecture, own, other in (("topk", "--sae.k", "--sae.l1-coefficient"),
                                     ("relu", "--sae.l1-coefficient", "--sae.k")):
        with pytest.raises(SystemExit):
            cli.main(["train", "--architecture", architecture, "--help"])
        out = capsys.readouterr().out
        assert own in out and other not in out and "--trainer.lr" in out
        assert "--sae.d-in" not in out and "--trainer.total-tokens" not in out   # set by the pipeline


@pytest.mark.parametrize("command", sorted(jobs.JOBS))
def test_every_commands_help_renders(command, capsys):
    """Field docs are help text: a '%' in one (e.g. "30% of tokens") once broke argparse's help."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command.split(), "--help"])   # "llm serve" is a sub-command
    assert exit_info.value.code == 0 and "--" in capsys.readouterr().out


@pytest.mark.parametrize(("values", "message"), [
    ({"sae": {"bogus": 1}}, r"unknown sae fields: bogus \(known: aux_coefficient"),
    ({"architecture": "relu", "sae": {"k": 3}}, r"unknown sae fields: k \(known: l1_coefficient"),
    ({"trainer": {"total_tokens": 5}}, "unknown trainer fields: total_tokens"),
    ({"trainer": {"lr": -1.0}}, "lr must be positive"),
    ({"trainer": 3}, "trainer must be a table"),
])
def test_group_errors_name_the_group_and_field(values, message):
    with pytest.raises(ValueError, match=message):
        build_config(TrainDictionaryConfig, values=values)


def test_interpret_groups_and_run_id():
    cfg = build_config(InterpretConfig, parsed(["interpret", "--dict-id", "d", "--llm.base-url",
                                                "http://127.0.0.1:9/v1", "--llm.timeout-s", "3",
                                                "--server.backend", "transformers"]))
    assert cfg.llm.base_url == "http://127.0.0.1:9/v1" and cfg.llm.timeout_s == 3 and cfg.llm.model == ""
    assert cfg.server.backend == "transformers"
    other_endpoint = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, base_url="http://127.0.0.1:8/v1"))
    assert other_endpoint.base_run_id("m") == cfg.base_run_id("m")      # where the model runs: same results
    hotter = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, temperature=0.7))
    assert hotter.base_run_id("m") != cfg.base_run_id("m") != cfg.base_run_id("other-model")


def test_config_id_is_stable_and_order_free():
    assert config_id("x", {"a": 1, "b": [2]}) == config_id("x", {"b": [2], "a": 1})
    assert config_id("x", {"a": 1}) != config_id("x", {"a": 2}) and len(config_id("x", {})) == len("x-") + 12


def test_layers_merge_field_by_field_inside_a_group(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text("[trainer]\nwarmup_steps = 7\nlr = 2e-3\n")
    cfg = build_config(TrainDictionaryConfig, parsed(["train", "--trainer.lr", "5e-3"]), toml,
                       values={"trainer": {"log_every": 3}})
    assert (cfg.trainer.warmup_steps, cfg.trainer.log_every, cfg.trainer.lr) == (7, 3, 5e-3)


def test_an_unknown_architecture_is_one_clear_line(capsys):
    assert cli.main(["train", "--architecture", "nope", "--sae.k", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown architecture 'nope'" in err and "topk" in err


def test_settings_that_do_not_change_the_dictionary_keep_its_id():
    base = build_config(TrainDictionaryConfig, values={"tokens": 1000})
    same = build_config(TrainDictionaryConfig, values={"tokens": 1000, "trainer": {"resume": False, "log_every": 7}})
    other = build_config(TrainDictionaryConfig, values={"tokens": 1000, "trainer": {"lr": 1e-3}})
    assert base.derived_id() == same.derived_id() != other.derived_id()


@pytest.mark.parametrize(("toml_text", "message"), [
    ('tokens = "many"\n', r"tokens expects int, got str 'many'"),
    ("[sae]\nk = \"32\"\n", r"sae\.k expects int, got str '32'"),
    ("[trainer]\nlr = true\n", r"trainer\.lr expects float, got bool True"),
    ("tokens = [1\n", "is not valid TOML"),
])
def test_bad_config_files_are_one_clear_line_naming_the_file(tmp_path, capsys, toml_text, message):
    toml = tmp_path / "train.toml"
    toml.write_text(toml_text)
    assert cli.main(["--store", str(tmp_path / "w.duckdb"), "train", "--config", str(toml)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(toml) in err and re.search(message, err)
    assert not (tmp_path / "w.duckdb").exists()            # nothing was written


def test_a_binary_config_file_is_named(tmp_path, capsys):
    blob = tmp_path / "train.toml"
    blob.write_bytes(b"\xff\xfe\x00binary")
    assert cli.main(["train", "--config", str(blob)]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
