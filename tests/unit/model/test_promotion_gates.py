"""The promotion gates of model.train (model/gates.py, torch-free): what makes a candidate promotable and promoted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model.gates import NO_GUARD, decide, guard_gate, overlaps, split_gate
from shared_code.retraining.approval import gates_of, version_state

pytestmark = pytest.mark.unit

BETTER_SPLIT = split_gate(0.9, 0.5, 0.0)


def guard(candidate: float, current: float | None, *, required: bool = True,
          independent: bool = True) -> dict[str, Any]:
    return guard_gate({"data": "/curated/imagenet-sample", "candidate": candidate, "current": current},
                      required=required, max_regression=0.02, independent=independent)


def test_unvetted_data_without_a_guard_set_is_never_promotable() -> None:
    for mode in ("approval", "automatic"):
        decision = decide(BETTER_SPLIT, guard_gate(None, required=True, max_regression=0.02), mode=mode)
        assert decision["promotable"] is False and decision["promoted"] is False
        assert decision["state"] == "not_promotable" and decision["reasons"] == [NO_GUARD]


def test_a_regression_on_the_guard_set_is_not_promotable() -> None:
    decision = decide(BETTER_SPLIT, guard(0.85, 0.90), mode="automatic")  # 0.05 worse, 0.02 allowed
    assert decision["promotable"] is False and decision["promoted"] is False
    assert "regresses more than 0.02" in decision["reasons"][0]
    assert decide(BETTER_SPLIT, guard(0.885, 0.90), mode="automatic")["promoted"] is True  # within the allowance


def test_a_guard_set_inside_the_training_data_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "data" / "guard").mkdir(parents=True)
    (tmp_path / "curated").mkdir()
    assert overlaps(tmp_path / "data" / "guard", tmp_path / "data") and overlaps(tmp_path, tmp_path / "data")
    assert not overlaps(tmp_path / "curated", tmp_path / "data")
    decision = decide(BETTER_SPLIT, guard(0.95, 0.90, independent=False), mode="automatic")
    assert decision["promotable"] is False and "not independent" in decision["reasons"][0]


def test_passing_every_gate_under_approval_is_a_candidate_not_promoted() -> None:
    decision = decide(BETTER_SPLIT, guard(0.90, 0.90), mode="approval")
    assert decision["promotable"] is True and decision["promoted"] is False and decision["state"] == "candidate"
    assert decision["reasons"] == [] and decision["gates"]["guard"]["evaluated"] is True


def test_passing_every_gate_under_automatic_is_promoted() -> None:
    decision = decide(BETTER_SPLIT, guard(0.90, 0.90), mode="automatic")
    assert decision["promotable"] is True and decision["promoted"] is True and decision["state"] == "promoted"


def test_the_split_gate_alone_still_decides_for_curated_data() -> None:
    """The CLI's contract for a curated folder (no --data-trust unvetted): no guard needed, a tie keeps current."""
    no_guard = guard_gate(None, required=False, max_regression=0.02)
    assert decide(BETTER_SPLIT, no_guard, mode="automatic")["promoted"] is True
    tie = decide(split_gate(0.5, 0.5, 0.0), no_guard, mode="automatic")
    assert tie["promoted"] is False and "does not beat" in tie["reasons"][0]
    with pytest.raises(ValueError, match="promotion mode"):
        decide(BETTER_SPLIT, no_guard, mode="sometimes")  # type: ignore[arg-type]


def test_the_models_api_reads_the_gates_and_the_state() -> None:
    passed = gates_of({"promotion": decide(BETTER_SPLIT, guard(0.9, 0.9), mode="approval")})
    failed = gates_of({"promotion": decide(BETTER_SPLIT, guard_gate(None, required=True, max_regression=0.02),
                                           mode="approval")})
    assert passed is not None and passed.passed and passed.mode == "approval" and passed.guard is not None
    assert failed is not None and not failed.passed and failed.reasons == [NO_GUARD]
    # an evaluation from before the gates (promoted flag only) has no gate results: it cannot be approved
    assert gates_of({"promotion": {"promoted": True, "min_improvement": 0.0}}) is None and gates_of(None) is None
    assert version_state("3", latest="2", gates=passed) == "candidate"
    assert version_state("2", latest="2", gates=None) == "current"
    assert version_state("1", latest="2", gates=passed) == "superseded"
    assert version_state("10", latest="9", gates=failed) == "not_promotable"
    assert version_state("4", latest=None, gates=None) == "unevaluated"
