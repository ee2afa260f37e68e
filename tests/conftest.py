"""Shared test setup: offline hub, few threads (the suite runs on 2 cores), an ffmpeg binary, the one builder of
tiny dsdi checkpoints (``tiny_checkpoint``: import it with ``from conftest import tiny_checkpoint``), the finished
run folder around one (``finish_run``) and the one runner of the real `dsdi` command (the ``cli`` fixture)."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

from dsdi.labels.labelset import LADI_V1, LabelSet  # noqa: E402
from dsdi.models.backbones import create_backbone  # noqa: E402
from dsdi.models.checkpoint import checkpoint_payload, read_checkpoint, save_checkpoint  # noqa: E402
from dsdi.train.config import TrainConfig  # noqa: E402
from dsdi.train.run_folder import EpochMetrics, RunFolder  # noqa: E402


def tiny_checkpoint(path: Path, *, backbone: str = "lcnet_050", img_size: int = 64, seed: int = 0,
                    head_std: tuple[float, float | None] | None = None, jitter: float = 0.0,
                    colour_calibrated: bool = False, epoch: int = 1, labelset: LabelSet = LADI_V1,
                    **payload) -> torch.nn.Module:
    """Write a real dsdi checkpoint of a random (untrained) tiny timm model and return the model, in eval mode.

    ``path``: a ``.pt`` file, or a run folder that gets its ``best.pt`` (folders are created). The model is
    ``create_backbone(backbone)`` with one output per class of ``labelset`` built after ``torch.manual_seed(seed)``,
    then changed by the options:
    ``head_std`` (weight std, bias std or None): a random head drawn from normal distributions (a strong head
    spreads the sigmoids); ``jitter``: every parameter moved by ``jitter`` x N(0, 1), so that no fresh
    initialisation equals it; ``colour_calibrated``: batch-norm statistics averaged over 3 batches of 32 noisy
    flat colours at ``img_size`` px (normalised as the model input), so the outputs depend on a frame's colour.
    ``img_size`` (square input side, px) and ``epoch`` go into the checkpoint; ``payload``: keys put over
    ``checkpoint_payload``'s (``classes``, ``val_lrap``, training state such as ``optimizer``...)."""
    torch.manual_seed(seed)
    model = create_backbone(backbone, num_classes=len(labelset.class_names))
    with torch.no_grad():
        if head_std is not None:
            torch.nn.init.normal_(model.get_classifier().weight, std=head_std[0])
            if head_std[1] is not None:
                torch.nn.init.normal_(model.get_classifier().bias, std=head_std[1])
        for parameter in model.parameters() if jitter else ():
            parameter.add_(jitter * torch.randn_like(parameter))
        if colour_calibrated:
            _calibrate_on_colours(model, img_size)
    path = Path(path)
    file = path if path.suffix == ".pt" else path / "best.pt"
    file.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(file, checkpoint_payload(model, backbone=backbone, img_size=img_size, epoch=epoch,
                                             labelset=labelset) | payload)
    return model.eval()


def finish_run(run_dir: Path) -> Path:
    """Give run_dir, whose best.pt holds epoch E, what a finished E-epoch run has too: config.toml planning E epochs
    (with the checkpoint's backbone and input size), metrics.csv rows 1..E and, unless present, last.pt (a copy of
    best.pt). Returns run_dir."""
    run = RunFolder(run_dir)
    checkpoint = read_checkpoint(run.best)
    epochs = int(checkpoint["epoch"])
    TrainConfig(backbone=checkpoint["backbone"], img_size=int(checkpoint["img_size"]), epochs=epochs).to_toml(
        run.config_toml)
    run.write_metrics([EpochMetrics(epoch, val_lrap=0.5) for epoch in range(1, epochs + 1)])
    if not run.last.is_file():
        shutil.copyfile(run.best, run.last)
    return run_dir


def _calibrate_on_colours(model: torch.nn.Module, side: int) -> None:
    """Batch-norm running statistics of ``model`` as the average over 3 batches of 32 flat random colours plus
    0.2-std noise at ``side`` px, normalised with mean 0.45 and std 0.226 (no gradient)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(3):
        colours = torch.rand(32, 3, 1, 1).expand(32, 3, side, side)
        model((colours + 0.2 * torch.randn(32, 3, side, side) - 0.45) / 0.226)


class DsdiCli:
    """The real `dsdi` command run in-process (typer's CliRunner on ``dsdi.cli.app.app``)."""

    def __call__(self, *args, expect: int | None = 0, **invoke_options):
        """Run `dsdi ARGS` (any str()-able items); fail with the output unless it exits with ``expect`` (None:
        any status). ``invoke_options`` go to ``CliRunner.invoke`` (env, terminal_width...)."""
        from typer.testing import CliRunner

        from dsdi.cli.app import app

        result = CliRunner().invoke(app, [str(arg) for arg in args], **invoke_options)
        if expect is not None:
            assert result.exit_code == expect, (f"dsdi {' '.join(map(str, args))}: exit {result.exit_code}:\n"
                                                f"{result.output}\n{result.exception!r}")
        return result

    @staticmethod
    def repeated(flag: str, values) -> list:
        """A multi-value flag as the command line gives it: ``repeated("--models", [a, b])``: --models a --models b."""
        return [item for value in values for item in (flag, value)]

    @staticmethod
    def said(result) -> str:
        """The command's output with rich's line wrapping undone."""
        return " ".join(result.output.split())


@pytest.fixture(scope="session")
def cli() -> DsdiCli:
    """``cli("eval", "--run", run, "--qrels", qrels, expect=2)``: see :class:`DsdiCli`."""
    return DsdiCli()


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary dsdi runs (dsdi.video.ffmpeg: the one shipped by the imageio-ffmpeg wheel)."""
    from dsdi.video.ffmpeg import ffmpeg_exe

    return ffmpeg_exe()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tiny models (on the shared 2 cores, 2 threads oversubscribe and
    make steps 3-10x slower); the previous count is restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
