"""The registry of evaluation tasks: the one list that ``meru embed`` and ``meru evaluate`` dispatch through.

Adding a task: a :class:`meru.evaluation.task.Task` subclass in its module, one line here, and a rule in
``workflow/rules/evaluate.smk`` (docs/ARCHITECTURE.md, "Where to add ...").
"""

from __future__ import annotations

from meru.evaluation.caption_choice import CaptionChoiceTask
from meru.evaluation.hierarcaps import HierarCapsTask
from meru.evaluation.linear_probe import LinearProbeTask
from meru.evaluation.prompt_sensitivity import PromptSensitivityTask
from meru.evaluation.retrieval import RetrievalTask
from meru.evaluation.structure import StructureTask
from meru.evaluation.task import Task
from meru.evaluation.traversal import TraversalTask
from meru.evaluation.zeroshot import ZeroShotTask

#: task name (``meru evaluate --task``, the metric record's ``task``) -> task, in command-line order
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        ZeroShotTask(),
        RetrievalTask(),
        LinearProbeTask(),
        StructureTask(),
        TraversalTask(),
        PromptSensitivityTask(),
        HierarCapsTask(),
        CaptionChoiceTask(),
    )
}


def tasks_embedding(kind: str) -> list[Task]:
    """The tasks that add fields to caches of ``kind`` (``classification``, ``retrieval``, ``hierarcaps``,
    ``caption-choice``, ``text-pool``), in registry order."""
    return [t for t in TASKS.values() if t.embeds == kind]
