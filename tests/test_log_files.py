"""Reading an allocation's log as the node agent leaves it on disk, rotated parts included (controlplane.logs).

Given log files written the way the agent writes and rotates them (`<id>.<inc>.log`, older parts `.1`, `.2`),
when they are read, tailed or followed, then the output comes back whole and in order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from controlplane import logs


def write(path: Path, text: str) -> None:
    with path.open("ab") as f:
        f.write(text.encode())


def rotate(path: Path, backups: int = 3) -> None:
    """What a rotating writer does past its size limit: .1 -> .2 ..., the current file -> .1, a new current file."""
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))
    path.touch()


def test_the_log_file_is_named_after_node_allocation_and_incarnation_and_nothing_else(tmp_path: Path) -> None:
    assert logs.log_file(tmp_path, "n1", "a1b2", 3) == tmp_path / "n1" / "a1b2.3.log"
    assert logs.log_file(tmp_path, "../etc", "a1b2", 1) is None
    assert logs.log_file(tmp_path, "n1", "x/../../passwd", 1) is None
    assert logs.log_file(tmp_path, "n1", "a1b2", 0) is None


def test_a_rotated_log_reads_oldest_first_and_tails_across_parts(tmp_path: Path) -> None:
    path = tmp_path / "a.1.log"
    write(path, "one\n")
    rotate(path)
    write(path, "two\n")
    rotate(path)
    write(path, "three\n")
    assert [p.name for p in logs.parts(path)] == ["a.1.log.2", "a.1.log.1", "a.1.log"]
    assert b"".join(logs.read_all(path)) == b"one\ntwo\nthree\n"
    assert logs.tail(path, 8) == b"o\nthree\n"
    assert logs.tail(tmp_path / "missing.log", 8) == b"" and not logs.exists(tmp_path / "missing.log")


def test_following_a_log_sees_every_line_through_a_rotation_and_stops_when_the_writer_is_done(tmp_path: Path) -> None:
    path = tmp_path / "a.1.log"
    write(path, "before\n")
    finished = threading.Event()

    def writer() -> None:
        for i in range(6):
            time.sleep(0.05)
            write(path, f"line {i}\n")
            if i == 2:
                rotate(path)
        finished.set()

    thread = threading.Thread(target=writer)
    thread.start()
    got = b"".join(logs.follow(path, done=finished.is_set, poll_s=0.01))
    thread.join()
    assert got == b"before\n" + b"".join(f"line {i}\n".encode() for i in range(6))


def test_following_from_now_skips_what_was_there_and_waits_for_a_file_yet_to_appear(tmp_path: Path) -> None:
    def later(path: Path, text: str) -> threading.Event:
        written = threading.Event()

        def go() -> None:
            write(path, text)
            written.set()

        threading.Timer(0.1, go).start()
        return written

    path = tmp_path / "a.1.log"
    write(path, "old\n")
    done = later(path, "new\n")
    assert b"".join(logs.follow(path, done=done.is_set, poll_s=0.01, from_start=False)) == b"new\n"
    new = tmp_path / "b.1.log"
    appeared = later(new, "hi\n")
    assert b"".join(logs.follow(new, done=appeared.is_set, poll_s=0.01)) == b"hi\n"
