"""The claims study: does each technique of the paper work? Measured on a synthetic world with LADI's long tail and
LADI's kind of crowd noise, where the true labels are known, with the training seed as the statistical unit.

Modules, each using only those before it: ``heads`` (a study model: a head trained on cached trunk features with
dsdi's losses and schedule), ``design`` (size, recipes, members, ensembles, the pre-registered headlines),
``resampling`` (weighted AP, item resamples), ``stats`` (sign-flip, TOST, Holm, two-level bootstrap, verdicts),
``trunk`` (pretraining the trunk, caching features of images and clip frames), ``measure`` (arms on test sets),
``claims`` (the ten claims as comparisons), ``world_report`` and ``report`` (docs/study.md and its figure), ``run``
(``dsdi study``: trunk -> world -> features -> heads -> report, each stage resumable).
"""

from dsdi.study.design import StudySize
from dsdi.study.run import run_study

__all__ = ["StudySize", "run_study"]
