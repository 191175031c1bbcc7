"""mer.keyframes.video: frame folders, videos, ranges, S3, corrupt inputs and the decode time bound."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from mer import storage
from mer.errors import DecodeError, DecodeTimeout, InputError
from mer.keyframes import video

H, W = 48, 64


def _frame(i: int) -> np.ndarray:
    """An RGB frame whose brightness encodes i (and a red square to check channel order)."""
    frame = np.full((H, W, 3), 10 + 12 * i, np.uint8)
    frame[4:12, 4:12] = (200, 0, 0)
    return frame


def _write_folder(folder, names, ext=".bmp", gray=False) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(names):
        frame = _frame(i)
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if gray else frame[..., ::-1]
        cv2.imwrite(os.path.join(folder, name + ext), image)


def _write_mp4(path, n: int = 20) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.ascontiguousarray(_frame(i)[..., ::-1]))
    writer.release()


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    _write_mp4(path)
    return str(path)


def _brightness(frames: np.ndarray) -> np.ndarray:
    return frames[:, 20:, 20:].reshape(len(frames), -1).mean(axis=1)


# Frame folders.


def test_folder_range_uses_the_numbers_in_the_file_names(tmp_path):
    _write_folder(tmp_path, [f"img{n}" for n in range(46, 56)])
    clip = video.read_clip(str(tmp_path), 48, 50)
    assert clip.shape == (3, H, W, 3) and clip.dtype == np.uint8
    # frames 48..50 are the 3rd..5th written; offset 0 is frame `start`
    np.testing.assert_array_equal(clip, np.stack([_frame(i) for i in (2, 3, 4)]))
    assert tuple(clip[0, 6, 6]) == (200, 0, 0)  # RGB, not OpenCV's BGR
    assert len(video.read_clip(str(tmp_path))) == 10


@pytest.mark.parametrize(
    "names, start, expected",
    [
        (["reg_img9", "reg_img10", "reg_img11"], 10, 1),  # numeric, not alphabetical, order
        (["006_01233", "006_01234", "006_01235"], 1234, 1),  # SAMM
        (["image0123455", "image0123456", "image0123457"], 123456, 1),  # SMIC
    ],
)
def test_folder_frame_numbers_from_dataset_names(tmp_path, names, start, expected):
    _write_folder(tmp_path, names)
    clip = video.read_clip(str(tmp_path), start, start)
    np.testing.assert_array_equal(clip[0], _frame(expected))


def test_folder_jpeg_and_grayscale_come_back_as_three_channels(tmp_path):
    _write_folder(tmp_path / "color", [f"img{n}" for n in range(1, 5)], ext=".jpg")
    _write_folder(tmp_path / "gray", [f"img{n}" for n in range(1, 5)], ext=".jpg", gray=True)
    color = video.read_clip(str(tmp_path / "color"))
    gray = video.read_clip(str(tmp_path / "gray"))
    assert color.shape == gray.shape == (4, H, W, 3)
    np.testing.assert_allclose(_brightness(color), [10 + 12 * i for i in range(4)], atol=3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_folder_min_side_decodes_at_a_reduced_scale(tmp_path, ext):
    _write_folder(tmp_path, [f"img{n}" for n in range(1, 4)], ext=ext)
    full = video.read_clip(str(tmp_path))
    assert video.read_clip(str(tmp_path), min_side=H).shape == full.shape  # no room to halve
    half = video.read_clip(str(tmp_path), min_side=H // 2)
    quarter = video.read_clip(str(tmp_path), min_side=H // 4 - 1)
    assert half.shape == (3, H // 2, W // 2, 3) and quarter.shape == (3, H // 4, W // 4, 3)
    # The same picture, smaller: 2 x 2 means of the full-size decode.
    means = full.reshape(3, H // 2, 2, W // 2, 2, 3).mean(axis=(2, 4))
    assert np.abs(half.astype(float) - means).max() <= 0.5
    np.testing.assert_allclose(quarter.mean(axis=(1, 2, 3)), full.mean(axis=(1, 2, 3)), atol=3)


def test_folder_gap_is_filled_with_the_previous_frame(tmp_path, caplog):
    _write_folder(tmp_path, ["img1", "img2", "img4"])
    clip = video.read_clip(str(tmp_path), 1, 4)
    assert len(clip) == 4
    np.testing.assert_array_equal(clip[2], clip[1])
    assert "missing" in caplog.text and "3" in caplog.text


def test_folder_range_outside_the_frames_names_the_folder(tmp_path):
    _write_folder(tmp_path, [f"img{n}" for n in range(5, 9)])
    with pytest.raises(InputError, match=str(tmp_path)):
        video.read_clip(str(tmp_path), 3, 6)
    with pytest.raises(InputError, match="start > stop"):
        video.read_clip(str(tmp_path), 7, 6)


def test_folder_unreadable_jpeg_names_the_frame(tmp_path):
    _write_folder(tmp_path, [f"img{n}" for n in range(1, 4)], ext=".jpg")
    (tmp_path / "img2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DecodeError, match="img2.jpg"):
        video.read_clip(str(tmp_path))


def test_missing_source_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such"):
        video.read_clip(str(tmp_path / "absent"))
    with pytest.raises(InputError, match="no such"):
        video.read_clip(str(tmp_path / "absent.mp4"))


def test_probe_folder(tmp_path):
    _write_folder(tmp_path, [f"img{n}" for n in range(46, 56)])
    assert video.probe(str(tmp_path)) == {
        "frames": 10,
        "fps": None,
        "height": H,
        "width": W,
        "first": 46,
        "last": 55,
    }


# Videos.


def test_mp4_whole_and_range(mp4):
    whole = video.read_clip(mp4)
    assert whole.shape == (20, H, W, 3) and whole.dtype == np.uint8
    np.testing.assert_allclose(_brightness(whole), [10 + 12 * i for i in range(20)], atol=4)
    part = video.read_clip(mp4, 5, 9)
    np.testing.assert_array_equal(part, whole[5:10])
    # in-process decoding gives the same frames
    np.testing.assert_array_equal(video.read_clip(mp4, 5, 9, timeout=None), part)


def test_mp4_range_outside_names_the_file(mp4):
    with pytest.raises(InputError, match="clip.mp4.*outside the 20 frames"):
        video.read_clip(mp4, 15, 25)


def test_probe_mp4(mp4):
    assert video.probe(mp4) == {
        "frames": 20,
        "fps": 25.0,
        "height": H,
        "width": W,
        "first": 0,
        "last": 19,
    }


@pytest.mark.parametrize("timeout", [60.0, None])
def test_corrupt_videos_name_the_file(tmp_path, mp4, timeout):
    data = open(mp4, "rb").read()
    cases = {
        "truncated.mp4": data[: len(data) // 2],
        "empty.mp4": b"",
        "text.mp4": b"this is a text file, not a video\n" * 10,
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(DecodeError, match=name):
            video.read_clip(str(path), timeout=timeout)


def _hang(*args):
    time.sleep(60)


def _crash(*args):
    os._exit(3)


def _bug(*args):
    return len(None)  # a TypeError: what a bug in our own decode code raises


def test_hung_decoder_times_out_and_the_next_call_works(mp4, monkeypatch):
    video.read_clip(mp4, 0, 0)  # the decoder process is up: the bound below is decode only
    monkeypatch.setattr(video, "_decode_video", _hang)
    start = time.monotonic()
    with pytest.raises(DecodeTimeout, match="clip.mp4"):
        video.read_clip(mp4, timeout=1.0)
    assert time.monotonic() - start < 5.0
    monkeypatch.undo()
    assert video.read_clip(mp4, 0, 3).shape == (4, H, W, 3)


def test_crashed_decoder_is_a_decode_error_and_the_next_call_works(mp4, monkeypatch):
    monkeypatch.setattr(video, "_decode_video", _crash)
    with pytest.raises(DecodeError, match="crashed"):
        video.read_clip(mp4)
    monkeypatch.undo()
    assert len(video.read_clip(mp4)) == 20


def test_a_bug_in_the_decoder_process_is_not_a_reject_and_the_next_call_works(mp4, monkeypatch):
    monkeypatch.setattr(video, "_decode_video", _bug)
    with pytest.raises(RuntimeError, match="TypeError") as raised:
        video.read_clip(mp4)
    assert not isinstance(raised.value, DecodeError | InputError)
    assert "_bug" in str(raised.value)  # the decoder's traceback comes along
    monkeypatch.undo()
    assert len(video.read_clip(mp4)) == 20


def test_decoder_buffer_grows_for_bigger_clips(tmp_path):
    big = tmp_path / "big.mp4"
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for i in range(40):
        writer.write(np.full((240, 320, 3), 3 * i, np.uint8))
    writer.release()
    for _ in range(2):  # the first call comes back through the pipe, the second through shm
        clip = video.read_clip(str(big))
        assert clip.shape == (40, 240, 320, 3)
        assert abs(float(clip[-1].mean()) - 117) < 4


# S3.


def test_s3_video_and_folder(s3_endpoint, mp4, tmp_path):
    root = "s3://mer-test/video-test"
    storage.write_bytes(f"{root}/clip.mp4", open(mp4, "rb").read())
    _write_folder(tmp_path, [f"img{n}" for n in range(1, 6)], ext=".jpg")
    for name in sorted(os.listdir(tmp_path)):
        storage.write_bytes(f"{root}/frames/{name}", (tmp_path / name).read_bytes())

    remote = video.read_clip(f"{root}/clip.mp4", 2, 4)
    np.testing.assert_array_equal(remote, video.read_clip(mp4, 2, 4))
    frames = video.read_clip(f"{root}/frames", 2, 5)
    np.testing.assert_array_equal(frames, video.read_clip(str(tmp_path), 2, 5))
    assert video.probe(f"{root}/frames")["frames"] == 5
    with pytest.raises(InputError, match="no such"):
        video.read_clip(f"{root}/absent.mp4")


def _write_sized_mp4(path, h: int, w: int, n: int = 12, fourcc: str = "mp4v") -> None:
    """n frames of h x w: seeded texture whose brightness rises with the frame number."""
    rng = np.random.default_rng(h * 1000 + w)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (w, h))
    assert writer.isOpened()
    for i in range(n):
        texture = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        writer.write(cv2.GaussianBlur(texture + np.uint8(12 * i), (0, 0), 1))
    writer.release()


# decord2 3.4.0 fails on these sizes (h x w) with "DECORDArrayCopyFromTo: The size must
# exactly match"; the files are fine.
@pytest.mark.parametrize("h, w", [(24, 24), (48, 48), (72, 72), (64, 48)])
@pytest.mark.parametrize("timeout", [60.0, None])
def test_video_sizes_decord_cannot_copy_out_are_decoded(tmp_path, h, w, timeout):
    path = str(tmp_path / f"face_{h}x{w}.mp4")
    _write_sized_mp4(path, h, w)
    frames = video.read_clip(path, 2, 9, timeout=timeout)
    assert frames.shape == (8, h, w, 3) and frames.dtype == np.uint8
    # Offset 0 is frame 2: the brightness steps of the written frames, in order.
    means = frames.reshape(8, -1).mean(axis=1)
    assert np.all(np.diff(means) > 6), means
    # A video handed over as bytes (an s3:// source) takes the same path.
    data = open(path, "rb").read()
    np.testing.assert_array_equal(video._decode_video(data, 2, 9, path), frames)


@pytest.mark.parametrize("h, w", [(32, 32), (90, 90)])
def test_opencv_fallback_gives_decords_frames_where_both_read(tmp_path, h, w):
    path = str(tmp_path / f"clip_{h}x{w}.mp4")
    _write_sized_mp4(path, h, w)
    by_decord = video.read_clip(path, 3, 10, timeout=None)
    by_opencv = video._decode_video_opencv(path, 3, 10, path)
    assert by_opencv.shape == by_decord.shape == (8, h, w, 3)
    np.testing.assert_array_equal(by_opencv, by_decord)


def test_truncated_video_of_a_size_decord_cannot_copy_is_still_corrupt(tmp_path):
    # An AVI cut short: decord opens it (its index is read from the frames present) and
    # fails on the frame size; OpenCV then finds the last frame broken.
    path = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), 25, (48, 48))
    for i in range(20):
        writer.write(np.full((48, 48, 3), 10 + 12 * i, np.uint8))
    writer.release()
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(DecodeError, match="cut.avi.*truncated or corrupt"):
        video.read_clip(str(cut))


def test_local_folder_listing_matches_the_fsspec_listing(tmp_path):
    # storage.entries lists local folders with one os.scandir (no stat per frame); what it
    # returns is what fsspec's listing gave: hidden names skipped, a link a "file".
    import fsspec

    folder = tmp_path / "clip"
    (folder / "sub").mkdir(parents=True)
    for name in ("img1.jpg", "img2.jpg", ".hidden.jpg"):
        (folder / name).write_bytes(b"x")
    os.symlink(folder / "sub", folder / "linked")
    os.symlink(tmp_path / "nowhere", folder / "broken")

    def by_fsspec(path):
        fs = fsspec.filesystem("file")
        if not fs.exists(path):
            return None
        out = []
        for e in fs.ls(path, detail=True):
            name = os.path.basename(e["name"].rstrip("/"))
            if not name.startswith(".") and e["name"].rstrip("/") != str(path).rstrip("/"):
                out.append((name, "directory" if e["type"] == "directory" else "file"))
        return sorted(out)

    for path in (folder, folder / "img1.jpg", tmp_path / "missing"):
        got = storage.entries(str(path))
        assert (sorted(got) if got is not None else None) == by_fsspec(str(path)), path
    assert sorted(storage.entries(str(folder))) == [
        ("broken", "file"),
        ("img1.jpg", "file"),
        ("img2.jpg", "file"),
        ("linked", "file"),
        ("sub", "directory"),
    ]
