"""The claims study: does each technique of the paper work? Measured on the synthetic world, where the true labels
are known, with several seeds and 95% intervals.

Modules, each using only those before it: ``design`` (worlds, size, training variants and their recipes, the rank
calls), ``stats`` (differences, intervals, verdicts), ``measure`` (image AP against true labels, clip AP against
qrels), ``claims`` (the eight claims as tables of differences), ``report`` (docs/study.md and its figure), ``run``
(``dsdi study``: worlds -> sweep -> rank -> report, each stage resumable).
"""

from dsdi.study.design import StudySize
from dsdi.study.run import run_study

__all__ = ["StudySize", "run_study"]
