"""The claims study (issue 12): does each technique of the paper work? Measured on the synthetic world, where the
true labels are known, with several seeds and 95% intervals.

Modules, each using those above it: ``design`` (worlds, size, training variants and their recipes), ``stats``
(differences, intervals, verdicts), ``measure`` (image AP against true labels, clip AP against qrels), ``run``
(``dsdi study``: worlds -> sweep -> rank, each stage resumable), ``claims`` (the eight claims as tables of
differences), ``report`` (docs/study.md and its figure).
"""

from dsdi.study.design import StudySize
from dsdi.study.run import run_study

__all__ = ["StudySize", "run_study"]
