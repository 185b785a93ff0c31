"""`make drift-check` on the 250 real photos with the shared MobileNetV2: each shift is caught and named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.factories import SHARED_MOBILENET, SHARED_PHOTOS

pytestmark = [pytest.mark.shared, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def verdicts() -> dict[str, Any]:
    """The last line of the command, run once (classifies 250 photos plus three shifted copies of 125)."""
    if not SHARED_PHOTOS.is_dir() or not SHARED_MOBILENET.is_file():
        pytest.skip(f"needs ../shared ({SHARED_PHOTOS} and {SHARED_MOBILENET}); absent in a fresh clone")
    result = subprocess.run(
        [sys.executable, "-m", "tools.drift_check", "check", "--data", str(SHARED_PHOTOS),
         "--model", str(SHARED_MOBILENET), "--seed", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_the_last_line_names_every_variant(verdicts: dict[str, Any]) -> None:
    assert set(verdicts) == {"same", "dark", "blur", "grayscale", "few_classes"}
    assert all(v["reference_rows"] == 125 and v["current_rows"] == 125 for v in verdicts.values())


def test_a_random_half_of_the_same_photos_is_not_drift(verdicts: dict[str, Any]) -> None:
    same = verdicts["same"]
    assert same["drift"] is False and same["signals"] == []
    # margin: the smallest p-value is far above the Bonferroni level (0.01 / 11)
    assert min(same["p_values"].values()) > 0.02


@pytest.mark.parametrize(("variant", "signal"), [
    ("dark", "brightness"), ("blur", "sharpness"), ("grayscale", "saturation"),
    ("few_classes", "class_distribution"),
])
def test_each_shift_is_drift_with_its_signal_named(verdicts: dict[str, Any], variant: str, signal: str) -> None:
    verdict = verdicts[variant]
    assert verdict["drift"] is True
    assert signal in verdict["signals"]
    assert verdict["p_values"][signal] < 0.01 / 11 / 2  # margin: at least twice below the per-signal level


def test_blur_and_grayscale_do_not_blame_brightness(verdicts: dict[str, Any]) -> None:
    for variant in ("blur", "grayscale"):
        assert "brightness" not in verdicts[variant]["signals"]
