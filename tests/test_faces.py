"""mer.keyframes.faces: Haar face box, one square crop per clip, the no-face fallback."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mer.keyframes.faces import crop, detect_face_box, face_crop_box


def _drawn_face(side: int) -> np.ndarray:
    """A schematic face (skin oval, dark brows, eyes, nose shade, mouth) that the frontal
    Haar cascade fires on, gray values replicated to RGB."""
    img = np.full((side, side), 60, np.uint8)
    c, s = side // 2, side / 240
    cv2.ellipse(img, (c, c), (int(70 * s), int(95 * s)), 0, 0, 360, 190, -1)
    for dx in (-30, 30):
        cv2.ellipse(
            img, (c + int(dx * s), c - int(38 * s)), (int(20 * s), int(5 * s)), 0, 0, 360, 70, -1
        )
        cv2.ellipse(
            img, (c + int(dx * s), c - int(20 * s)), (int(15 * s), int(8 * s)), 0, 0, 360, 40, -1
        )
    cv2.ellipse(img, (c, c + int(15 * s)), (int(8 * s), int(18 * s)), 0, 0, 360, 150, -1)
    cv2.ellipse(img, (c, c + int(50 * s)), (int(28 * s), int(8 * s)), 0, 0, 360, 80, -1)
    img = cv2.GaussianBlur(img, (0, 0), 3 * s)
    return np.repeat(img[..., None], 3, axis=2)


def _on_canvas(face: np.ndarray, top: int, left: int, shape=(480, 640)) -> np.ndarray:
    canvas = np.full((*shape, 3), 60, np.uint8)
    canvas[top : top + face.shape[0], left : left + face.shape[1]] = face
    return canvas


def _inside_and_square(box, shape) -> bool:
    x, y, w, h = box
    return w == h > 0 and x >= 0 and y >= 0 and x + w <= shape[1] and y + h <= shape[0]


def test_face_found_gives_a_square_box_around_it_with_margin():
    frame = _on_canvas(_drawn_face(200), top=100, left=220)
    face = detect_face_box(frame)
    assert face is not None
    box, found = face_crop_box(frame, margin=0.2)
    assert found and _inside_and_square(box, frame.shape)
    x, y, w, _ = box
    assert x <= 220 + 100 <= x + w and y <= 100 + 100 <= y + w  # the face centre is inside
    assert w >= max(face[2], face[3])  # the margin grows the detected box


def test_box_near_the_border_is_shifted_inside():
    frame = _on_canvas(_drawn_face(200), top=0, left=0, shape=(240, 320))
    box, found = face_crop_box(frame, margin=0.5)
    assert found and _inside_and_square(box, frame.shape)


@pytest.mark.parametrize("shape", [(280, 340), (340, 280)])
def test_no_face_gives_the_centre_square(shape):
    frame = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    frame = cv2.GaussianBlur(frame, (0, 0), 4)
    assert detect_face_box(frame) is None
    box, found = face_crop_box(frame)
    side = min(shape)
    assert not found
    assert box == ((shape[1] - side) // 2, (shape[0] - side) // 2, side, side)


def test_crop_clip_and_frame():
    clip = np.random.default_rng(1).integers(0, 255, (5, 60, 80, 3), dtype=np.uint8)
    box = (10, 5, 40, 40)
    out = crop(clip, box)
    assert out.shape == (5, 40, 40, 3)
    np.testing.assert_array_equal(out[2], clip[2, 5:45, 10:50])
    np.testing.assert_array_equal(crop(clip[2], box), out[2])


def test_grayscale_frame_is_accepted():
    frame = _on_canvas(_drawn_face(200), top=100, left=220)[..., :1]
    box, found = face_crop_box(frame)
    assert found and _inside_and_square(box, frame.shape)


def test_eye_boxes_on_synthetic_faces():
    from mer.datasets.synthetic.faces import draw_face
    from mer.keyframes.faces import EYE_MAX_SHARE, detect_eye_boxes
    from mer.keyframes.video import halve

    found = 0
    for seed in range(6):
        face = draw_face(np.random.default_rng(seed), (340, 280))
        full = np.clip(face.open_eyes[..., ::-1] + 0.5, 0, 255).astype(np.uint8)  # BGR -> RGB
        for image in (np.ascontiguousarray(full), halve(full)):  # as decoded, as the curve sees it
            boxes = detect_eye_boxes(image)
            assert len(boxes) <= 2 and boxes == sorted(boxes)
            h, w = image.shape[:2]
            for _x, y, bw, bh in boxes:
                assert bw <= EYE_MAX_SHARE * w + 1 and 0.15 * h - 1 <= y and y + bh <= 0.55 * h + 1
            found += len(boxes) == 2 and boxes[0][0] + boxes[0][2] / 2 < w / 2 < boxes[1][0]
    assert found >= 10  # of 12: both eyes, one each side of the middle
