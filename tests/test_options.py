"""The config dataclasses are the one source of every flag: each field has its flag, each flag its field, the
help shows them all and the README's option tables are generated from the same fields."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from dsdi import options
from dsdi.cli.app import app
from dsdi.errors import InputError
from dsdi.rank.config import RankConfig
from dsdi.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {  # command -> (its config dataclass, parameters that are not config fields)
    "train": (TrainConfig, {"config", "resume"}),
    "rank": (RankConfig, {"ctx"}),
}


def command_parameters(name: str) -> dict[str, list[str]]:
    """Parameter name -> its flags, of a dsdi command as click sees it."""
    command = typer.main.get_command(app).commands[name]
    return {param.name: [*param.opts, *param.secondary_opts] for param in command.params if param.name != "help"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_field_has_its_flag_and_every_flag_a_field(name):
    config_cls, extras = COMMANDS[name]
    parameters = command_parameters(name)
    fields = {field.name for field in dataclasses.fields(config_cls)}
    assert set(parameters) - extras == fields, "a field without a flag, or a flag without a field"
    for field in fields:
        assert options.flag_name(field) in parameters[field]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_flag(name):
    config_cls, _ = COMMANDS[name]
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert result.exit_code == 0, result.output
    for field in dataclasses.fields(config_cls):
        assert options.flag_name(field.name) in result.output
        assert field.metadata["help"].split()[0] in result.output


def test_readme_option_tables_are_generated_from_the_fields():
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme_options.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert script.with_tables(readme) == readme, "run: .venv/bin/python scripts/update_readme_options.py"
    for config_cls in (TrainConfig, RankConfig):
        for field in dataclasses.fields(config_cls):
            assert f"`{options.flag_name(field.name)}" in readme


def test_flags_override_a_recipe_which_overrides_the_run_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(out=str(run), epochs=7, lr=0.5, seed=3, backbone="lcnet_050").to_toml(run / "config.toml")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'out = "{run}"\nlr = 0.25\nloss = "focal"\n')
    layered = TrainConfig.layered({"seed": 9}, recipe=recipe, resume=True)
    assert (layered.epochs, layered.lr, layered.seed, layered.loss, layered.backbone) == (7, 0.25, 9, "focal",
                                                                                          "lcnet_050")
    fresh = TrainConfig.layered({"seed": 9}, recipe=recipe, resume=False)  # no resume: the run's file is not read
    assert (fresh.epochs, fresh.backbone) == (40, "resnest50d")


def test_values_are_checked_against_their_declaration():
    with pytest.raises(InputError, match="--optimizer 'adam': choose one of sgd, adamw"):
        TrainConfig(optimizer="adam").resolved()
    with pytest.raises(InputError, match="--lr must be a finite number above 0"):
        TrainConfig(lr=float("inf")).resolved()
    with pytest.raises(InputError, match="--epochs must be at least 1"):
        TrainConfig(epochs=0).resolved()
    with pytest.raises(InputError, match="command line: epochs must be an integer"):
        TrainConfig().updated({"epochs": 2.5}, source="command line")
    with pytest.raises(InputError, match="--agg 'median': choose one of max, mean, top3"):
        RankConfig(clips=Path("c"), models=[Path("m")], agg="median").resolved()
    with pytest.raises(InputError, match="--device 'gpu'"):
        RankConfig(clips=Path("c"), models=[Path("m")], device="gpu").resolved()
    with pytest.raises(InputError, match="need 2 non-negative weights"):
        RankConfig(clips=Path("c"), models=[Path("a"), Path("b")], model_weights=[1.0]).resolved()


def test_rank_defaults_resolve_once(tmp_path):
    (tmp_path / "runs" / "B").mkdir(parents=True)
    (tmp_path / "runs" / "B" / "best.pt").write_bytes(b"")
    (tmp_path / "runs" / "A").mkdir()
    (tmp_path / "runs" / "A" / "last.pt").write_bytes(b"")
    (tmp_path / "runs" / "unfinished").mkdir()
    config = RankConfig(clips=tmp_path, runs_dir=tmp_path / "runs", run_id="r1").resolved()
    assert config.models == [tmp_path / "runs" / "A", tmp_path / "runs" / "B"]
    assert config.model_weights == [1.0, 1.0] and config.out == Path("submissions/r1")
