"""The models ``dsdi rank`` scores and the options an ensemble file sets, resolved from the files that name them.

``--models``: a run folder must hold a finished run (``dsdi.train.run_folder``) and stands for its best.pt (else
last.pt); a checkpoint file, a Hugging Face model folder or hub name is taken as given. ``--ensemble``: its
members' checkpoint files (``dsdi.rank.ensemble``). Neither: every finished run in ``--runs-dir``, and a one-line
notice on stderr for each unfinished run skipped.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from dsdi.errors import InputError
from dsdi.models.classifier import is_hf_folder, is_hub_name
from dsdi.progress import stderr_console
from dsdi.rank.config import RankConfig, check_model_weights
from dsdi.rank.ensemble import load_ensemble, member_checkpoints
from dsdi.rank.output import RankOutput
from dsdi.train.run_folder import RunFolder, runs_in
from dsdi.workspace import SUBMISSIONS_DIR


def resolve_models(config: RankConfig) -> RankConfig:
    """``config.resolved()`` with ``models`` as checkpoint files, ``model_weights`` (default equal), ``agg`` (max),
    ``run_id`` (dsdi_run) and ``out`` (``submissions/<run_id>``) filled in. InputError for a model no rank can
    use, a ``--fuse`` folder that is no rank output, or no model at all.

    With ``ensemble`` the models are its members' checkpoint files (every missing or unfinished member named in one
    InputError), the weights its members' weights, and ``agg``, ``fuse`` and ``run_id`` the file's unless given
    (``--fuse`` replaces the file's list)."""
    config = config.resolved()  # refuses --models and --model-weights beside --ensemble
    models = [model_file(ref) for ref in config.models]
    weights, agg, fuse, run_id = config.model_weights, config.agg, config.fuse, config.run_id
    if config.ensemble is not None:
        ensemble = load_ensemble(config.ensemble)
        models, weights = member_checkpoints(ensemble, config.runs_dir), ensemble.weights
        agg, run_id, fuse = agg or ensemble.agg, run_id or ensemble.name, fuse or ensemble.fuse
    _check_fuse(config, fuse)
    models = models or _finished_models(config.runs_dir)
    weights = check_model_weights(weights or [1.0] * len(models), len(models))
    run_id = run_id or "dsdi_run"
    out = Path(config.out) if config.out else SUBMISSIONS_DIR / run_id
    return dataclasses.replace(config, models=models, model_weights=weights, agg=agg or "max", fuse=list(fuse),
                               run_id=run_id, out=out)


def model_file(ref: str | Path) -> Path:
    """The model of a ``--models`` entry: a checkpoint file, a Hugging Face model folder (holding config.json) or
    hub name (``owner/name`` where no such path exists; ``dsdi.models.classifier`` finds it in the cache) as given;
    a finished run's best.pt (else last.pt). InputError naming the entry when it is none of these."""
    if is_hub_name(ref):
        return Path(ref)
    ref = Path(ref)
    if ref.is_file() or is_hf_folder(ref):
        return ref
    if not ref.is_dir():
        raise InputError(f"--models {ref}: no such checkpoint file, run directory, Hugging Face model folder or "
                         "hub name (owner/name)")
    run = RunFolder(ref)
    reason = run.unfinished_reason()
    if reason:
        held = next((path for path in (run.best, run.last) if path.is_file()), None)
        instead = f"pass {held} to rank that checkpoint as it is" if held else "pass a .pt checkpoint file"
        raise InputError(f"--models {ref}: not a finished run ({reason}); resume its training with dsdi train "
                         f"--out {ref} --resume, or {instead}")
    return run.model_checkpoint()


def _finished_models(runs_dir: Path) -> list[Path]:
    """The model checkpoints of the finished runs in ``runs_dir``; says which unfinished runs it skipped."""
    finished, unfinished = runs_in(runs_dir)
    for run, reason in unfinished:
        _notice(f"skipping {run}: not a finished run ({reason}); resume it with dsdi train --out {run} --resume")
    if not finished:
        skipped = f" ({len(unfinished)} unfinished skipped)" if unfinished else ""
        raise InputError(f"no models: pass --models RUN_DIR ... or train one into {runs_dir}/{skipped}")
    return [run.model_checkpoint() for run in finished]


def _notice(message: str) -> None:
    """One line on stderr, from the first process only (under torchrun every process resolves the models)."""
    if int(os.environ.get("RANK", "0")) == 0:
        stderr_console.print(message, markup=False, highlight=False, soft_wrap=True)


def _check_fuse(config: RankConfig, fuse: list[tuple[Path, float]]) -> None:
    """InputError when a rank output to fuse in has no clip_scores.csv (named as ``--fuse`` or as the ensemble
    file's entry it came from)."""
    from_file = config.ensemble is not None and not config.fuse
    for folder, weight in fuse:
        scores = RankOutput(folder).clip_scores_csv
        if not scores.is_file():
            where = f"{config.ensemble}: fuse out_dir {folder}" if from_file else f"--fuse {folder}"
            raise InputError(f"{where}: {scores} not found; rank that run first, or point --fuse "
                             f"OTHER_OUT_DIR:{weight:g} at a dsdi rank output folder")
