"""The drift command's data handling and profile writing, with the tiny real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_code.inference.model_card import load_card
from shared_code.monitoring.drift import load_reference_profile, profile_rows
from tests.factories import image_bytes, make_tiny_model
from tools.drift_check import labelled_images, main, write_profile

pytestmark = pytest.mark.unit
COLOURS = {"red": (220, 30, 30), "green": (30, 220, 30), "blue": (30, 30, 220)}


def _class_folders(root: Path) -> Path:
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True)
        for i in range(4):
            (root / label / f"{i}.png").write_bytes(image_bytes("PNG", size=(40 + i, 40), color=colour))
    return root


def test_labels_come_from_labels_csv_by_index_or_name(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("filename,class_index,label\na.jpg,2,ignored\nb.jpg,,blue\n")
    images = labelled_images(tmp_path, ["dark", "red", "green", "blue"])
    assert [(image.path.name, image.label) for image in images] == [("a.jpg", "green"), ("b.jpg", "blue")]


def test_labels_come_from_class_subfolders(tmp_path: Path) -> None:
    images = labelled_images(_class_folders(tmp_path / "data"), [])
    assert len(images) == 12 and {image.label for image in images} == set(COLOURS)


def test_profile_is_written_beside_the_card_and_named_in_it(tmp_path: Path) -> None:
    card_path = make_tiny_model(tmp_path / "model", version="profile-test")
    target = write_profile(_class_folders(tmp_path / "data"), card_path)
    card, onnx_path = load_card(card_path)
    assert card.reference_profile_file == "reference_profile.json"
    assert target == card_path.parent / card.reference_profile_file
    profile = load_reference_profile(card, onnx_path)
    assert profile is not None and profile["model"]["version"] == "profile-test"
    rows = profile_rows(profile)
    assert len(rows) == 12
    # the tiny model reads colour: every solid image is predicted as its folder's class
    assert all(row["predicted_label"] == row["known_label"] for row in rows)
    assert len(rows[0]["embedding"]) == 32


def test_check_needs_data(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check"])
    assert "--data" in capsys.readouterr().err
