"""The settings one clip's key frames are built with, as the workers that build them read them.

The key-frame stage builds them from its config (mer.keyframes.preprocess), batch inference
from a model card's config (mer.serving.inference), inspection from a table's `_meta.json`
(mer.keyframes.inspection); they travel, pickled, to the Ray Data actors that build key frames
(mer.keyframes.chunks, mer.serving.clip_keyframes), which must not import torch: this module
imports only mer.config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mer.config import KeyframeConfig

_SECTION_KEYS = frozenset(f.name for f in dataclasses.fields(KeyframeConfig))


@dataclass(frozen=True)
class KeyframeSettings:
    """What mer.keyframes.clip_records builds one clip's key frames with (KeyframeConfig's
    meaning for each field), and where the learned interpolator lies when they are rendered
    with one."""

    k: int
    size: int
    method: str
    motion: str
    interpolation: str
    face_crop: bool
    stabilize: bool
    registration: str
    decode_timeout: float
    gpus: float  # GPU share of a key-frame actor: > 0 renders the interpolator on CUDA
    interpolator_uri: str | None = None  # interpolation "adaconv" only


def keyframe_settings(
    keyframes: KeyframeConfig | Mapping, interpolator_uri: Callable[[], str] | None = None
) -> KeyframeSettings:
    """The settings of a `keyframes` config section (a KeyframeConfig, or its dict as a model
    card or a table's `_meta.json` holds it: a key it lacks, written before that setting
    existed, takes KeyframeConfig's default; a key it has that no longer exists is ignored),
    plus where the learned interpolator lies when the key frames are rendered with one
    (`interpolator_uri()`, asked only then)."""
    if not isinstance(keyframes, KeyframeConfig):
        keyframes = KeyframeConfig(**{k: v for k, v in keyframes.items() if k in _SECTION_KEYS})
    uri = None
    if keyframes.interpolation == "adaconv" and interpolator_uri is not None:
        uri = interpolator_uri()
    kept = [f.name for f in dataclasses.fields(KeyframeSettings) if f.name != "interpolator_uri"]
    return KeyframeSettings(**{k: getattr(keyframes, k) for k in kept}, interpolator_uri=uri)
