"""Whether a trained candidate may be promoted: the gates it must pass, and what passing them leads to.

Two gates, both measured through the serving pipeline by model.train:

- **split**: candidate accuracy > current accuracy + min_improvement on the held-out split. When the data are
  user corrections this split is drawn from the same unvetted labels as the training set, so on its own it
  proves nothing about poisoning: a flood of wrong labels trains *and* validates the candidate.
- **guard**: a trusted labelled set that does not come from user corrections (a curated folder; for
  retraining RETRAIN_GUARD_DATA), on which the candidate may lose at most max_regression against the current
  model. `required` (model.train --data-trust unvetted, which the retraining launchers always pass): without a
  guard evaluation the candidate is never promotable, and the run says so.

A candidate that passes both is *promotable*. Under `automatic` it is promoted at once; under `approval` (the
retraining default, RETRAIN_PROMOTION) it is published as a candidate and an admin promotes it
(`POST /api/models/{name}/versions/{version}/promote`, which reads the `promotion` block this module builds
from the version's evaluation.json). Torch-free, so the rules are testable without the model venv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

PromotionMode = Literal["automatic", "approval"]
PROMOTION_MODES: tuple[PromotionMode, ...] = ("automatic", "approval")
DATA_TRUST = ("curated", "unvetted")  # unvetted (user corrections): the guard gate is required
# what a run's version is once the gates are known (the models API adds current/superseded/unevaluated)
STATE_PROMOTED = "promoted"
STATE_CANDIDATE = "candidate"
STATE_NOT_PROMOTABLE = "not_promotable"
SPLIT_RULE = "candidate accuracy > current accuracy + min_improvement on the same held-out split"
GUARD_RULE = "candidate accuracy >= current accuracy - max_regression on the trusted guard set"
NO_GUARD = ("no trusted guard set: the held-out split comes from the same unvetted corrections as the training "
            "set (model.train --guard-data; RETRAIN_GUARD_DATA for retraining)")


def split_gate(candidate: float, current: float, min_improvement: float) -> dict[str, Any]:
    passed = candidate > current + min_improvement
    return {"passed": passed, "candidate": candidate, "current": current, "min_improvement": min_improvement,
            "rule": SPLIT_RULE,
            "reason": None if passed else f"held-out accuracy {candidate:.4f} does not beat the current "
                                          f"{current:.4f} + {min_improvement}"}


def overlaps(guard: Path, data: Path) -> bool:
    """Whether the guard folder is the training data, inside it, or holds it (then it is not independent)."""
    guard, data = guard.resolve(), data.resolve()
    data_folder = data.parent if data.is_file() else data
    return guard == data_folder or guard.is_relative_to(data_folder) or data_folder.is_relative_to(guard)


def guard_gate(measured: dict[str, Any] | None, *, required: bool, max_regression: float,
               independent: bool = True) -> dict[str, Any]:
    """`measured`: {"data", "candidate", "current"} top-1 on the guard set (current None: nothing to compare)."""
    if measured is None:
        return {"passed": not required, "required": required, "evaluated": False, "max_regression": max_regression,
                "rule": GUARD_RULE, "reason": NO_GUARD if required else None}
    candidate, current = float(measured["candidate"]), measured.get("current")
    reason = None
    if not independent:
        reason = f"the guard set {measured.get('data')} overlaps the training data: it is not independent of it"
    elif current is not None and candidate < float(current) - max_regression:
        reason = (f"guard accuracy {candidate:.4f} regresses more than {max_regression} from the current "
                  f"{float(current):.4f}")
    return {**measured, "passed": reason is None, "required": required, "evaluated": True,
            "max_regression": max_regression, "rule": GUARD_RULE, "reason": reason}


def decide(split: dict[str, Any], guard: dict[str, Any], *, mode: PromotionMode) -> dict[str, Any]:
    """The `promotion` block of evaluation.json: promotable when every gate passed; promoted only if automatic."""
    if mode not in PROMOTION_MODES:
        raise ValueError(f"promotion mode {mode!r} is not one of {', '.join(PROMOTION_MODES)}")
    reasons = [str(gate["reason"]) for gate in (split, guard) if not gate["passed"]]
    promotable = not reasons
    promoted = promotable and mode == "automatic"
    state = STATE_PROMOTED if promoted else STATE_CANDIDATE if promotable else STATE_NOT_PROMOTABLE
    return {"mode": mode, "promotable": promotable, "promoted": promoted, "state": state, "reasons": reasons,
            "gates": {"split": split, "guard": guard}}


def not_promoted(decision: dict[str, Any], reason: str) -> dict[str, Any]:
    """The decision after an automatic promotion found the pointer already past this version."""
    return {**decision, "promoted": False, "state": STATE_CANDIDATE, "reasons": [*decision["reasons"], reason]}
