"""mer.keyframes.settings: the settings key-frame workers build with, from a config or a card."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from mer.config import KeyframeConfig
from mer.keyframes.settings import KeyframeSettings, keyframe_settings


def test_a_card_section_without_a_newer_setting_takes_its_default():
    # A model card written before keyframes.registration existed: its section lacks it.
    old_card = dataclasses.asdict(KeyframeConfig(k=8, size=32, motion="diff"))
    del old_card["registration"]
    kf = keyframe_settings(old_card)
    assert kf.registration == KeyframeConfig().registration == "motion"
    assert (kf.k, kf.size, kf.motion) == (8, 32, "diff")  # what the card says is kept
    assert kf == keyframe_settings(KeyframeConfig(k=8, size=32, motion="diff"))
    # A setting the card has is read, not defaulted; a key no longer known is ignored.
    newer = {**old_card, "registration": "phase", "retired_setting": 1}
    assert keyframe_settings(newer).registration == "phase"


def test_the_interpolator_is_asked_for_only_when_it_renders():
    asked = []

    def where() -> str:
        asked.append(True)
        return "s3://bucket/interpolator.pt"

    assert keyframe_settings(KeyframeConfig(), where).interpolator_uri is None
    assert not asked
    learned = keyframe_settings({"interpolation": "adaconv", "gpus": 0.25}, where)
    assert learned.interpolator_uri == "s3://bucket/interpolator.pt" and learned.gpus == 0.25


def test_the_settings_pickle_for_the_ray_actors_and_are_frozen():
    kf = keyframe_settings(KeyframeConfig(k=8, size=32, face_crop=True), lambda: "unused")
    again = pickle.loads(pickle.dumps(kf))
    assert isinstance(again, KeyframeSettings) and again == kf
    with pytest.raises(dataclasses.FrozenInstanceError):
        kf.k = 4  # type: ignore[misc]
