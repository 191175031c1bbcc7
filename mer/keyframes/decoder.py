"""A helper process for decoders that can hang or crash: each call is bounded in time.

decord is known to hang or crash on some broken files, so `mer.keyframes.video` runs video decoding
through `run_bounded`: one helper process per calling process, started on first use and
reused, killed and restarted when a call overruns its timeout (DecodeTimeout) or the process
dies (DecodeError). Requests are (function, args) pickled over a socket pair; functions
travel by name, so the child imports their module (its sys.path is ours). A uint8 array
result comes back through a shared-memory buffer: one memcpy instead of a pickle through a
pipe.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from mer.errors import DecodeError, DecodeTimeout, InputError

# Seconds a fresh decoder process may take to import numpy and decord before we give up.
_STARTUP_TIMEOUT = 120.0
# Largest shared buffer kept per decoder process; bigger clips come back through the pipe.
_MAX_SHARED_BYTES = 2 << 30


class _DecoderProcess:
    """A helper Python process that runs decode functions; killed and replaced on a hang.

    Requests are (function, args) pickled over a socket pair (functions travel by name, so
    the child imports their module; its sys.path is ours). A result that is a uint8 array
    is written into a shared buffer (a /dev/shm file both processes map, unlinked as soon as
    the child has mapped it, so nothing is left behind if either side dies).
    """

    def __init__(self) -> None:
        import socket

        self.owner = os.getpid()
        parent, child = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from mer.keyframes.decoder import _serve; _serve({child.fileno()})",
            ],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.buffer: mmap.mmap | None = None
        if not self.conn.poll(_STARTUP_TIMEOUT):
            self.close()
            raise DecodeError(f"the video decoder process did not start in {_STARTUP_TIMEOUT} s")
        self.conn.recv()  # "ready"

    def run(self, fn: Callable, args: tuple, source: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        self.conn.send((fn, args))
        while True:
            reply = self._recv(deadline, source, timeout)
            kind = reply[0]
            if kind == "shared":
                shape = reply[1]
                out = np.empty(shape, np.uint8)
                out.reshape(-1)[:] = np.frombuffer(self.buffer, np.uint8, out.size)
                return out
            if kind == "pipe":  # too big for the buffer: bytes follow; grow for next time
                out = np.empty(reply[1], np.uint8)
                self._recv(deadline, source, timeout, into=out)
                self._grow(out.nbytes)
                return out
            if kind == "value":
                return reply[1]
            if kind == "error":
                raise reply[1]

    def _recv(self, deadline: float, source: str, timeout: float, into: np.ndarray | None = None):
        if not self.conn.poll(max(0.0, deadline - time.monotonic())):
            self.close()
            raise DecodeTimeout(
                f"{source}: decoding took longer than {timeout:g} s and was abandoned; the "
                "file may be damaged (for a very long video, pass a larger timeout)"
            )
        try:
            if into is not None:
                return self.conn.recv_bytes_into(memoryview(into).cast("B"))
            return self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.proc.poll()
            self.close()
            raise DecodeError(
                f"{source}: the video decoder crashed (exit code {code}) on this file; "
                "the file is probably corrupt"
            ) from e

    def _grow(self, nbytes: int) -> None:
        if nbytes > _MAX_SHARED_BYTES or (self.buffer is not None and len(self.buffer) >= nbytes):
            return
        size = max(nbytes, 64 << 20)
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="mer-decode-", dir=folder)
        try:
            os.ftruncate(fd, size)
            buffer = mmap.mmap(fd, size)
            self.conn.send(("map", path))
            ok = self.conn.poll(30.0) and self.conn.recv() == ("mapped",)
        finally:
            os.close(fd)
            os.unlink(path)
        if not ok:  # the helper did not answer: its state is unknown, start afresh
            buffer.close()
            self.close()
            return
        if self.buffer is not None:
            self.buffer.close()
        self.buffer = buffer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None


def _serve(fd: int) -> None:
    """The decoder process's loop (started by _DecoderProcess)."""
    import decord  # noqa: F401  (imported before "ready": not charged to a request's timeout)

    parent = os.getppid()

    def exit_with_parent() -> None:  # a decode that hangs must not outlive its caller
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    conn = Connection(fd)
    buffer: mmap.mmap | None = None
    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request[0] == "map":
            with open(request[1], "r+b") as f:
                buffer = mmap.mmap(f.fileno(), 0)
            conn.send(("mapped",))
            continue
        fn, args = request
        try:
            result = fn(*args)
        except (InputError, DecodeError) as e:  # the file's fault: the caller records a reject
            conn.send(("error", e))
            continue
        except Exception:  # a bug in our code (decord's own errors are DecodeErrors by now)
            detail = traceback.format_exc()  # the stage fails with it; sent as text: any pickles
            conn.send(("error", RuntimeError(f"the video decoder process failed:\n{detail}")))
            continue
        if isinstance(result, np.ndarray):
            result = np.ascontiguousarray(result, np.uint8)
            if buffer is not None and result.nbytes <= len(buffer):
                np.frombuffer(buffer, np.uint8, result.size)[:] = result.reshape(-1)
                conn.send(("shared", result.shape))
            else:
                conn.send(("pipe", result.shape))
                conn.send_bytes(memoryview(result).cast("B"))
        else:
            conn.send(("value", result))


_decoder: _DecoderProcess | None = None
_decoder_lock = threading.Lock()


def run_bounded(fn: Callable, args: tuple, source: str, timeout: float) -> Any:
    """Run fn(*args) in this process's decoder process, at most `timeout` seconds."""
    global _decoder
    with _decoder_lock:  # one request at a time per decoder process
        if _decoder is None or _decoder.owner != os.getpid() or _decoder.proc.poll() is not None:
            _decoder = _DecoderProcess()  # a forked child never reuses its parent's helper
        decoder = _decoder
        try:
            return decoder.run(fn, args, source, timeout)
        except DecodeError:
            if decoder.proc.poll() is not None:  # timed out or crashed: start afresh next time
                _decoder = None
            raise


def shutdown() -> None:
    """Stop this process's helper, if any (it is restarted on the next call)."""
    global _decoder
    with _decoder_lock:
        if _decoder is not None and _decoder.owner == os.getpid():
            _decoder.close()
        _decoder = None
