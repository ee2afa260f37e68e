"""Every command is declared one way, as a config dataclass whose fields are its options: each field has its flag,
each flag its field, --help shows them all, docs/cli.md is generated from the same declarations, and the
commands share one vocabulary (--topk, --out, --seed/--seeds, --img-size, --workers, repeated multi-value flags)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from importlib import metadata
from pathlib import Path

import pytest

import dsdi.rank.scoring
import dsdi.study
import dsdi.train.sweep
from dsdi import options
from dsdi.cli.app import app
from dsdi.cli.common import PANELS
from dsdi.cli.reference import cli_reference
from dsdi.errors import InputError
from dsdi.rank.config import RankConfig
from dsdi.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {command.name: command for command in app.registered_commands}
EXTRAS = {"train": {"config", "resume"}}  # options of a command that are not fields of its config


def flags_of(name: str) -> dict[str, list[str]]:
    """Parameter name -> its declared flags (positional arguments: []), as the command declares them."""
    parameters = inspect.signature(COMMANDS[name].callback).parameters.values()
    return {p.name: [flag for decl in getattr(p.default, "param_decls", None) or () for flag in decl.split("/")]
            for p in parameters}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_field_has_its_flag_and_every_flag_a_field(name):
    config_cls = COMMANDS[name].callback.config_cls
    parameters = flags_of(name)
    fields = dataclasses.fields(config_cls)
    assert set(parameters) - EXTRAS.get(name, set()) == {field.name for field in fields}
    for field in fields:
        if field.metadata["argument"]:
            assert parameters[field.name] == []
        else:
            assert parameters[field.name][0] == options.flag_name(field.name)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_declared_option(name, cli):
    result = cli(name, "--help", env={"COLUMNS": "250"}, terminal_width=250)
    for field in dataclasses.fields(COMMANDS[name].callback.config_cls):
        shown = field.name.upper() if field.metadata["argument"] else options.flag_name(field.name)
        assert shown in result.output, shown
        assert field.metadata["help"].split()[0] in result.output
    for extra in EXTRAS.get(name, ()):
        assert options.flag_name(extra) in result.output


def test_cli_docs_are_generated_from_the_declarations():
    spec = importlib.util.spec_from_file_location("update_cli_docs", REPO / "scripts" / "update_cli_docs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    written = script.CLI_DOCS.read_text(encoding="utf-8")
    assert written == cli_reference(app), "run: .venv/bin/python scripts/update_cli_docs.py"
    for name in COMMANDS:
        assert f"### dsdi {name}\n" in written
        for flags in flags_of(name).values():
            assert all(f"`{'/'.join(flags)}`" in written for _ in flags[:1]), flags
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/cli.md" in readme and "<!-- options" not in readme


def test_help_is_for_users_and_groups_the_commands_in_pipeline_order(cli):
    shown = cli("--help", env={"COLUMNS": "120"}, terminal_width=120).output
    assert "dsdi trains multi-label classifiers" in shown and "typer" not in shown and "InputError" not in shown
    panels = [shown.index(f"─ {panel} ─") for panel in PANELS]
    assert panels == sorted(panels)
    order = ["synth", "labels", "prepare", "shots", "train", "sweep", "select", "export", "rank", "fuse", "eval",
             "eval-images", "pool", "report", "table", "search", "serve", "study"]
    places = [shown.index(f"│ {name} ") for name in order]
    assert places == sorted(places) and set(order) == set(COMMANDS)
    assert [COMMANDS[name].rich_help_panel for name in order] == [
        "Data"] * 4 + ["Training"] * 2 + ["Ranking"] * 4 + ["Evaluation"] * 5 + ["Search"] * 2 + ["Research"]


def test_version_is_the_installed_package_version(cli):
    assert cli("--version").output.strip() == f"dsdi {metadata.version('dsdi')}"


def test_one_word_per_concept_across_commands():
    declared = {name: {flag for flags in flags_of(name).values() for flag in flags} for name in COMMANDS}
    for old in ("--k", "--top", "--out-root", "--out-dir", "--image-size", "--clip-size", "--decode-workers",
                "--rank-dir", "--short-side-px"):
        assert not [name for name, flags in declared.items() if old in flags], old
    depth = {"rank", "fuse", "eval", "report", "table", "search"}  # ranking depth, or clips shown per feature
    assert {name for name, flags in declared.items() if "--topk" in flags} == depth
    assert {name for name, flags in declared.items() if "--workers" in flags} == {"train"}  # loader processes
    assert {name for name, flags in declared.items() if "--decode-threads" in flags} == {"rank", "prepare"}
    assert {name for name, flags in declared.items() if "--img-size" in flags} == {"train", "study"}  # model input
    assert {name for name, flags in declared.items() if "--seeds" in flags} == {"sweep", "study"}
    assert {name for name, flags in declared.items() if "--out" in flags} == set(COMMANDS)
    paths = {"out", "labels", "images", "clips", "shots", "qrels", "run", "recipes", "videos", "annotations", "rank",
             "token_map", "feature_numbers", "ensemble", "ensembles", "weights", "config", "report", "rank_dir",
             "run_dirs", "runs_dir"}
    counts = {("synth", "images"), ("synth", "clips"), ("study", "images"), ("study", "clips")}
    for name in COMMANDS:
        for parameter in inspect.signature(COMMANDS[name].callback).parameters.values():
            if parameter.name == "out":  # every output says whether it is a file or a folder
                assert "file" in parameter.default.help or "folder" in parameter.default.help, name
            if parameter.name in paths and (name, parameter.name) not in counts:
                assert "Path" in str(parameter.annotation), (name, parameter.name)


@pytest.mark.parametrize(("args", "old"), [
    (["eval", "--run", "r", "--qrels", "q", "--k", "5"], "--k"),
    (["table", "runs/A01", "--k", "5"], "--k"),
    (["report", "out", "--top", "3"], "--top"),
    (["sweep", "r.toml", "--out-root", "runs/x"], "--out-root"),
    (["synth", "--out", "w", "--image-size", "64x48"], "--image-size"),
    (["rank", "--clips", "c", "--decode-workers", "2"], "--decode-workers"),
    (["prepare", "--out", "c", "--img-size", "64"], "--img-size"),
    (["prepare", "--out", "c", "--workers", "2"], "--workers"),
])
def test_old_spellings_are_gone(args, old, cli):
    result = cli(*args, expect=2)
    assert "No such option" in result.output and old in result.output


def test_multi_value_flags_repeat(cli, monkeypatch, tmp_path):
    ranked = []
    monkeypatch.setattr(dsdi.rank.scoring, "rank", lambda config: ranked.append(config) or _no_output())
    cli("rank", "--clips", tmp_path, "--models", "runs/A", "--models", "runs/B", "--model-weights", 2,
        "--model-weights", 1, "--fuse", "o1:0.5", "--fuse", "o2:1", "--decode-threads", 3)
    config = ranked[0]
    assert config.models == [Path("runs/A"), Path("runs/B")] and config.model_weights == [2.0, 1.0]
    assert config.fuse == [(Path("o1"), 0.5), (Path("o2"), 1.0)] and config.decode_threads == 3
    refused = cli("rank", "--clips", tmp_path, "--models", "runs/A", "runs/B", expect=2)  # one value per flag
    assert "unexpected extra argument" in refused.output
    comma_list = cli("rank", "--clips", tmp_path, "--model-weights", "2,1", expect=2, env={"COLUMNS": "200"})
    assert "Invalid value for '--model-weights'" in cli.said(comma_list)


def test_seeds_and_out_of_sweep_and_study(cli, monkeypatch, tmp_path):
    swept, studied = [], []
    monkeypatch.setattr(dsdi.train.sweep, "sweep", lambda recipes, **kw: swept.append((recipes, kw)) or _no_runs())
    cli("sweep", "a.toml", "b.toml", "--seeds", 0, "--seeds", 2, "--out", tmp_path / "runs", "--set", "epochs=1")
    recipes, given = swept[0]
    assert recipes == [Path("a.toml"), Path("b.toml")] and given["seeds"] == [0, 2]
    assert given["out_root"] == tmp_path / "runs" and given["overrides"] == {"epochs": 1}
    monkeypatch.setattr(dsdi.study, "run_study", lambda root, report, size: studied.append((root, report, size)))
    cli("study", "--out", tmp_path / "s", "--seeds", "4,5")
    root, report, size = studied[0]
    assert (root, report, size.seeds) == (tmp_path / "s", tmp_path / "s" / "study.md", (4, 5))  # its own folder
    cli("study", "--report", tmp_path / "r.md")
    assert studied[1][:2] == (Path("runs/study"), tmp_path / "r.md")


def _no_output():
    """A rank result as torchrun's other processes return it: nothing written, nothing printed."""
    return type("Result", (), {"trec_path": None})()


def _no_runs():
    return dsdi.train.sweep.SweepResult([])


def test_flags_override_a_recipe_which_overrides_the_run_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(out=run, epochs=7, lr=0.5, seed=3, backbone="lcnet_050").to_toml(run / "config.toml")
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
