"""Clip decoding: video files (decord) and frame folders (JPEG/PNG/BMP), local or s3://.

`read_clip(source, start, stop)` returns the frames `start..stop` (inclusive, in the
source's own numbering) as one uint8 array (T, H, W, 3), RGB. Offset 0 of the array is
frame `start`, so a manifest's onset/apex/offset become offsets by subtracting `start`.

- Frame folders: frames are numbered by the last run of digits in the file name (img46.jpg
  -> 46, 006_01234.jpg -> 1234; see list_frames). A frame number
  missing inside the range is filled with the previous frame and logged, so that offset
  i is always frame start + i (our choice; the datasets' frames are contiguous).
- Videos: frames are numbered by 0-based index. decord decodes only the asked range.
  decord2 3.4.0 cannot copy out the frames of some small sizes (OpenCV's mp4v at 24x24,
  48x48, 72x72, 64x48: "DECORDArrayCopyFromTo: The size must exactly match"), a limit of
  decord, not of the file: those clips are read with OpenCV's FFmpeg reader instead, which
  gives the same frames, pixel for pixel, on the sizes both read (tests/test_video.py).
- Grayscale sources (SAMM) come back with C=3, the gray replicated, so every later stage
  sees one layout.

decord is known to hang or crash on some broken files, so by default a video is decoded in
a helper process that is killed and restarted when it overruns `timeout` (DecodeTimeout) or
dies (DecodeError): `mer.keyframes.decoder`. An s3:// video is fetched by the caller and handed over as bytes (decord reads a
file-like object whole anyway). `timeout=None` decodes in-process. Frame folders are
decoded in-process (OpenCV's image decoders do not hang); S3 frames are fetched
concurrently.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import cv2
import numpy as np

from mer import storage
from mer.datasets.common import list_frames  # the dataset's frame folders
from mer.errors import DecodeError, InputError
from mer.keyframes import decoder

log = logging.getLogger(__name__)

# decord2 3.4.0's message when it cannot copy out frames of some small sizes (24x24, 48x48,
# 72x72, 64x48 from OpenCV's mp4v writer): its own limitation, the file is fine.
DECORD_COPY_LIMIT = "DECORDArrayCopyFromTo"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def read_clip(
    source: str,
    start: int | None = None,
    stop: int | None = None,
    *,
    timeout: float | None = 60.0,
    min_side: int | None = None,
) -> np.ndarray:
    """Frames `start..stop` (inclusive) of a video file or frame folder as uint8 (T, H, W, 3).

    `source` is a local path or s3:// URI. `start`/`stop` are frame numbers in the source's
    own numbering (frame folder: the numbers in the file names; video: 0-based index); None
    means the first/last frame. Offset 0 of the result is frame `start`. Channels are RGB;
    grayscale is replicated to 3 channels.

    Raises InputError for a missing source or a range outside the frames present,
    DecodeError for a corrupt, truncated, empty or mislabelled file, and DecodeTimeout when
    decoding a video takes longer than `timeout` seconds (None: no bound, in-process).

    `min_side`: frames of a folder are halved by 2 x 2 means, as each is decoded, as often
    as their shorter side stays at least `min_side` px (less memory and less work for every
    later step). Videos come back at full size (reduce_frames reduces them afterwards).
    """
    if start is not None and stop is not None and start > stop:
        raise InputError(f"{source}: frame range {start}..{stop} is empty (start > stop)")
    if _is_video(source):
        if timeout is None:
            return _decode_video(_video_input(source), start, stop, source)
        return decoder.run_bounded(
            _decode_video, (_video_input(source), start, stop, source), source, timeout
        )
    return _read_folder(source, start, stop, min_side)


def probe(source: str, *, timeout: float | None = 60.0) -> dict[str, Any]:
    """Cheap metadata: frames (count), fps (None for a frame folder), height, width, first, last.

    first/last are the first and last frame numbers in the source's own numbering.
    """
    if _is_video(source):
        if timeout is None:
            return _probe_video(_video_input(source), source)
        return decoder.run_bounded(_probe_video, (_video_input(source), source), source, timeout)
    frames = _list_folder(source)
    height, width = _decode_image(frames[0][1], _read_files([frames[0][1]])[0]).shape[:2]
    return {
        "frames": len(frames),
        "fps": None,
        "height": height,
        "width": width,
        "first": frames[0][0],
        "last": frames[-1][0],
    }


def shutdown_decoder() -> None:
    """Stop this process's decoder helper, if any (it is restarted on the next call)."""
    decoder.shutdown()


# Sources.


def _is_video(source: str) -> bool:
    """True for a video file, False for a frame folder; InputError if neither exists."""
    if str(source).lower().endswith(VIDEO_EXTENSIONS):
        return True
    fs, path = storage.filesystem(source)
    try:
        if fs.isdir(path):
            return False
        if fs.isfile(path):
            return True  # an unusual extension: let the decoder judge it
    except PermissionError as e:
        raise InputError(f"{source}: access denied ({e}); check the AWS credentials") from e
    raise InputError(f"{source}: no such video file or frame folder; check the path or URI")


def _video_input(source: str) -> str | bytes:
    """A local path as is; a remote video's bytes (decord reads file-likes fully anyway)."""
    if storage.is_remote(source):
        return storage.read_bytes(source)
    if not os.path.isfile(source):
        raise InputError(f"{source}: no such video file; check the path")
    return str(source)


# Videos (these run inside the decoder process unless timeout is None).


def _open_video(video: str | bytes, source: str):
    import decord

    if isinstance(video, str) and os.path.getsize(video) == 0:
        raise DecodeError(f"{source}: the video file is empty (0 bytes); re-copy it")
    if isinstance(video, bytes) and not video:
        raise DecodeError(f"{source}: the video file is empty (0 bytes); re-copy it")
    try:
        return decord.VideoReader(io.BytesIO(video) if isinstance(video, bytes) else video)
    except Exception as e:  # decord raises RuntimeError / DECORDError with C++ context
        raise DecodeError(
            f"{source}: not a readable video ({_first_line(e)}); the file may be truncated, "
            "corrupt or not a video"
        ) from None


def _decode_video(
    video: str | bytes, start: int | None, stop: int | None, source: str
) -> np.ndarray:
    reader = _open_video(video, source)
    n = len(reader)
    first = 0 if start is None else start
    last = n - 1 if stop is None else stop
    if first < 0 or last > n - 1 or first > last:
        raise InputError(
            f"{source}: frames {first}..{last} are outside the {n} frames of the video "
            f"(0..{n - 1}); check the clip's onset/offset"
        )
    try:
        frames = reader.get_batch(list(range(first, last + 1))).asnumpy()
    except Exception as e:  # decord's C++ errors (DECORDError, RuntimeError) on a bad stream
        if DECORD_COPY_LIMIT in str(e):  # decord's own limit, not the file's: OpenCV reads it
            return _decode_video_opencv(video, first, last, source)
        raise DecodeError(
            f"{source}: decoding frames {first}..{last} failed ({_first_line(e)}); "
            "the file may be truncated or corrupt"
        ) from None
    return _as_rgb(frames)


def _decode_video_opencv(video: str | bytes, first: int, last: int, source: str) -> np.ndarray:
    """Frames first..last read by OpenCV's FFmpeg reader, RGB; DecodeError when it cannot
    read them all (then the stream itself is broken)."""
    if isinstance(video, bytes):  # OpenCV reads files only
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(video)
            f.flush()
            return _decode_video_opencv(f.name, first, last, source)
    cap = cv2.VideoCapture(video, cv2.CAP_FFMPEG)
    frames = []
    try:
        # Read from the first frame on (seeking by frame number is not exact in every
        # container); a clip is at most a few hundred frames.
        for i in range(last + 1):
            ok, bgr = cap.read()
            if not ok:
                raise DecodeError(
                    f"{source}: decord cannot copy out frames of this size (its own limit) "
                    f"and OpenCV read only frames 0..{i - 1} of 0..{last}; the file may be "
                    "truncated or corrupt"
                )
            if i >= first:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    log.debug("%s: decoded by OpenCV (decord cannot copy out frames of this size)", source)
    return np.stack(frames)


def _probe_video(video: str | bytes, source: str) -> dict[str, Any]:
    reader = _open_video(video, source)
    try:
        height, width = reader[0].shape[:2]
    except Exception as e:  # decord: DECORDError / RuntimeError, IndexError with no frame
        raise DecodeError(f"{source}: cannot decode the first frame ({_first_line(e)})") from None
    n = len(reader)
    fps = float(reader.get_avg_fps())
    return {"frames": n, "fps": fps, "height": height, "width": width, "first": 0, "last": n - 1}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames, dtype=np.uint8)


# Frame folders.


def _list_folder(source: str) -> list[tuple[int, str]]:
    frames = list_frames(source)
    if not frames:
        raise InputError(f"{source}: the frame folder holds no JPEG/PNG/BMP frames")
    for a, b in zip(frames, frames[1:], strict=False):
        if a[0] == b[0]:
            raise InputError(
                f"{source}: two files carry frame number {a[0]} ({os.path.basename(a[1])}, "
                f"{os.path.basename(b[1])}); keep one"
            )
    return frames


def _read_folder(
    source: str, start: int | None, stop: int | None, min_side: int | None = None
) -> np.ndarray:
    frames = _list_folder(source)
    first = frames[0][0] if start is None else start
    last = frames[-1][0] if stop is None else stop
    if first < frames[0][0] or last > frames[-1][0]:
        raise InputError(
            f"{source}: frames {first}..{last} are outside the frames present "
            f"({frames[0][0]}..{frames[-1][0]}); check the clip's onset/offset"
        )
    chosen = [(n, uri) for n, uri in frames if first <= n <= last]
    data = _read_files([uri for _, uri in chosen])
    head = _decode_image(chosen[0][1], data[0], rgb=False)
    times = halvings(head.shape[:2], min_side) if min_side else 0
    images = {chosen[0][0]: _rgb(halve(head, times))}
    for (n, uri), blob in zip(chosen[1:], data[1:], strict=True):
        images[n] = _rgb(halve(_decode_image(uri, blob, rgb=False), times))
    shape = images[chosen[0][0]].shape
    out = np.empty((last - first + 1, *shape), np.uint8)
    missing = []
    previous = images[chosen[0][0]]
    for i, n in enumerate(range(first, last + 1)):
        image = images.get(n)
        if image is None:
            missing.append(n)
            image = previous
        elif image.shape != shape:
            raise DecodeError(
                f"{source}: frame {n} is {image.shape[1]}x{image.shape[0]} but frame "
                f"{chosen[0][0]} is {shape[1]}x{shape[0]}; the folder mixes frame sizes"
            )
        out[i] = image
        previous = image
    if missing:
        log.warning(
            "%s: frame numbers %s are missing; each was filled with the frame before it",
            source,
            _ranges(missing),
        )
    return out


def _read_files(uris: list[str]) -> list[bytes]:
    if uris and storage.is_remote(uris[0]):
        fs, _ = storage.filesystem(uris[0])
        paths = [storage.filesystem(u)[1] for u in uris]
        try:
            blobs = fs.cat(paths)  # fetched concurrently
        except FileNotFoundError as e:
            raise InputError(f"{e.filename or uris[0]}: frame file vanished while reading") from e
        return [blobs[p] for p in paths]
    out = []
    for uri in uris:
        try:
            with open(uri, "rb") as f:
                out.append(f.read())
        except FileNotFoundError as e:
            raise InputError(f"{uri}: frame file vanished while reading") from e
    return out


def _decode_image(uri: str, blob: bytes, rgb: bool = True) -> np.ndarray:
    """One frame image, RGB (or as OpenCV decodes it, BGR, with rgb=False)."""
    image = None
    if blob:
        image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)  # gray -> 3 ch
    if image is None:
        raise DecodeError(f"{uri}: cannot decode this frame image (empty, truncated or corrupt)")
    return _rgb(image) if rgb else image


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # after any halving: a quarter of the pixels


def halvings(shape: tuple[int, ...], min_side: int) -> int:
    """How many times an image of `shape` (H, W, ...) can be halved with its shorter side
    staying at least `min_side` px."""
    h, w, times = shape[0], shape[1], 0
    while min(h, w) // 2 >= min_side:
        h, w, times = h // 2, w // 2, times + 1
    return times


def halve(image: np.ndarray, times: int = 1) -> np.ndarray:
    """`image` (H, W[, C]) halved `times` times by 2 x 2 means (an odd last row or column is
    dropped each time). libjpeg could decode JPEG at 1/2 scale directly, about 30 % faster,
    but its per-block scaling moves with the 8 x 8 grid rather than with the face: on the
    synthetic LOSO test, UF1 over seeds 0-2 averaged 0.50 with it against 0.53 with means."""
    for _ in range(times):
        h, w = image.shape[0] // 2, image.shape[1] // 2
        image = cv2.resize(image[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return image


def reduce_frames(frames: np.ndarray, min_side: int) -> np.ndarray:
    """A clip (T, H, W, C) halved by means as often as its shorter side stays >= min_side."""
    times = halvings(frames.shape[1:3], min_side)
    if times == 0:
        return frames
    out = np.stack([halve(f, times) for f in frames])
    return out.reshape(*out.shape[:3], *frames.shape[3:])  # OpenCV drops a single channel


def _ranges(numbers: list[int]) -> str:
    parts, begin = [], numbers[0]
    for a, b in zip(numbers, numbers[1:] + [None], strict=True):
        if b != a + 1:
            parts.append(str(begin) if begin == a else f"{begin}..{a}")
            begin = b
    return ", ".join(parts)
