"""One training process per workdir: an advisory lock held for the life of the process.

The lock is `fcntl.flock` on `<workdir>/.lock`, which the kernel releases when the holder exits —
normally, by an exception or by `kill -9` — so a stale lock of a dead process never blocks anyone:
the next `mgt train` simply takes it. The file records the holder's PID and host for the message a
second process gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time


class WorkdirBusyError(ValueError):
    """Another live process trains in this workdir."""


class WorkdirLock:
    """`with WorkdirLock(workdir): ...` — raises `WorkdirBusyError` naming the holder's PID when taken."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._file = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            f.close()
            raise WorkdirBusyError(
                f"workdir {os.path.dirname(self.path)} is in use by another mgt train (PID {holder.get('pid', '?')} "
                f"on {holder.get('host', '?')}); wait for it to finish or use another --workdir") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
