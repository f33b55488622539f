"""The naive full-push mode: every key is written on every run, the way Infisical's GitHub
sync and similar tools re-push every secret. It is syncd with its memory switched off: the
plan is made as usual, then every key it would leave alone (unchanged, or already holding the
value) is written anyway. Configs for this mode also set ``drift_check: 0s``, so the
destination is listed on every run, as a stateless pusher must do to find what to delete.

In-process: ``with full_push(): ...``. As a process: ``python -m benchmarks.naive <syncd
arguments>`` is ``syncd`` with the same patch (``python -m benchmarks.naive -c f.yaml run``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from syncd import planner
from syncd.model import Action, Plan

REASON = "naive full push: written on every run"


def push_everything(plan: Plan) -> Plan:
    """``plan`` with every key that has a desired value written."""
    changes = []
    for c in plan.changes:
        if c.desired is not None and not c.write and c.action in (Action.NOOP, Action.ADOPT):
            action = Action.UPDATE if c.action is Action.NOOP else Action.ADOPT
            c = replace(c, action=action, write=True, reason=REASON, record=False)
        changes.append(c)
    return replace(plan, changes=tuple(changes))


def _naive(plan_fn: Callable[..., Plan]) -> Callable[..., Plan]:
    def plan(*args: Any, **kwargs: Any) -> Plan:
        return push_everything(plan_fn(*args, **kwargs))

    return plan


@contextmanager
def full_push() -> Iterator[None]:
    """While inside, the engine's planner pushes every key."""
    original = planner.plan
    planner.plan = _naive(original)
    try:
        yield
    finally:
        planner.plan = original


def main(argv: list[str] | None = None) -> int:
    from syncd.cli import main as syncd_main

    planner.plan = _naive(planner.plan)
    return syncd_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
