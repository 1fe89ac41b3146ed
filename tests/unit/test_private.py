"""What the system writes is its user's alone (regjobs.private): the secret key is 0600 from
the moment it exists, the state folder is 0700 (made so or tightened), children of the stack
create 0600 files, and the warm pool's socket sits in a private folder and refuses a peer of
another uid (root runs these tests: a forked child becomes `nobody`)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from deployments.stack import UNIX_PATH_MAX, Stack
from deployments.stack_config import StackConfig
from regjobs.private import create_private, private_dir, write_private
from regjobs.settings import PROJECT_DIR, _generated_key
from tests.helpers import as_nobody, become_nobody, wait_for


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: modes must come from the code, not from the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_secret_key_is_0600_from_its_creation_and_never_chmodded(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    opened: list[tuple[str, int, int, int]] = []
    written: list[tuple[int, int]] = []
    chmodded: list[Any] = []
    real_open, real_write = os.open, os.write

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        fd = real_open(path, flags, mode, **kw)
        opened.append((str(path), flags, mode, stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    def spy_write(fd: int, data: Any) -> int:
        # The mode of the file at the moment any byte of the key reaches it.
        written.append((fd, stat.S_IMODE(os.fstat(fd).st_mode)))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "write", spy_write)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: chmodded.append(a))
    monkeypatch.setattr(os, "fchmod", lambda *a, **k: chmodded.append(a))
    _generated_key.cache_clear()
    try:
        key = _generated_key(state)
    finally:
        _generated_key.cache_clear()

    created = [o for o in opened if o[1] & os.O_CREAT]
    assert len(created) == 1, opened
    path, flags, requested, at_open = created[0]
    assert Path(path).parent == state
    assert flags & os.O_EXCL, "created with O_EXCL: never an existing file of someone else's"
    assert requested == 0o600 and at_open == 0o600
    assert written and all(m == 0o600 for _, m in written)
    assert chmodded == []
    assert (state / "secret.key").read_bytes().strip() == key
    assert mode(state / "secret.key") == 0o600
    assert mode(state) == 0o700
    assert sorted(p.name for p in state.iterdir()) == ["secret.key"]  # no temporary left


def test_the_state_folder_is_tightened_if_it_exists_but_a_shared_sticky_one_is_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    assert mode(private_dir(state)) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # as /tmp: tightening it would lock everyone else out
    with caplog.at_level(logging.WARNING, logger="regjobs.private"):
        private_dir(shared)
    assert mode(shared) == 0o1777
    assert "left as it is" in caplog.text


def test_private_writes_are_0600_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    old = tmp_path / "launcher.json"
    old.write_text("{}")
    os.chmod(old, 0o644)
    write_private(old, b'{"pid": 1}')
    assert old.read_bytes() == b'{"pid": 1}'
    assert mode(old) == 0o600
    create_private(tmp_path / "new", b"x")
    assert mode(tmp_path / "new") == 0o600
    with pytest.raises(FileExistsError):
        create_private(tmp_path / "new", b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["launcher.json", "new"]


def test_what_a_child_of_the_stack_creates_is_0600(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # as an ordinary shell's: the stack must not depend on it
    try:
        stack = Stack(StackConfig(state_dir=tmp_path / "state", env={}))
        made = tmp_path / "state" / "made-by-a-child"
        child = stack.spawn("child", [sys.executable, "-c", f"open({str(made)!r}, 'w').write('x')"])
        child.process.wait(timeout=30)
        stack.stop_child("child")
        stack.loopback_ca()
    finally:
        os.umask(previous)
    assert mode(tmp_path / "state") == 0o700
    assert mode(made) == 0o600
    assert mode(stack.logs_dir) == 0o700
    assert mode(stack.logs_dir / "child.log") == 0o600
    assert mode(tmp_path / "state" / "prefect-loopback-ca.pem") == 0o600


def test_the_warm_socket_is_in_the_state_folder_or_a_private_folder_when_too_long(
    tmp_path: Path,
) -> None:
    short = Stack(StackConfig(state_dir=tmp_path / "s", env={}))
    assert short.warm_socket("worker") == str(tmp_path / "s" / "run" / "warm-worker.sock")

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    long = Stack(StackConfig(state_dir=deep, env={}))
    path = Path(long.warm_socket("worker"))
    assert len(str(deep / "run" / "warm-worker.sock")) > UNIX_PATH_MAX
    assert len(os.fsencode(path)) <= UNIX_PATH_MAX
    assert path.parent.parent == Path(tempfile.gettempdir())
    assert mode(path.parent) == 0o700 and path.parent.stat().st_uid == os.getuid()
    assert long.warm_socket("worker-2") == str(path.parent / "warm-worker-2.sock")
    long.stop()
    assert not path.parent.exists()


# ------------------------------------------------------------------ the warm pool's socket


@contextmanager
def warm_pool(size: int) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A real warm pool (`python -m deployments.warm pool`) keeping `size` warm processes,
    each spawned (a new interpreter); with 0 it imports nothing heavy and answers a claim
    "none", to a peer it accepts."""
    folder = Path(tempfile.mkdtemp(prefix="regjobs-test-"))
    path = folder / "warm.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.warm", "pool"],
        cwd=PROJECT_DIR,
        env={
            **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
            "REGJOBS_WARM_SOCKET": str(path),
            "REGJOBS_WARM_PROCESSES": str(size),
            "REGJOBS_WARM_FORK": "false",
            "REGJOBS_STATE_DIR": str(folder / "state"),
            "DATABASE_URL": f"sqlite:///{folder / 'state' / 'regjobs.db'}",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(path.exists, timeout=30, what="the pool's socket")
        yield path, process
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pool() -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    with warm_pool(0) as found:
        yield found


def test_a_launcher_of_the_same_user_is_handed_a_warm_process() -> None:
    """The peer checks let the system's own processes through: a warm process registers
    with the pool and a launcher's claim is handed to it."""
    from deployments.warm import handover

    with warm_pool(1) as (path, _process):
        claimed = wait_for(
            lambda: handover.claim(str(path)), timeout=60, interval=0.5, what="a warm process"
        )
        conn, pid = claimed
        try:
            assert pid != os.getpid()
            assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:4] == [
                b"-m",
                b"deployments.warm",
                b"serve",
            ]
        finally:
            conn.close()


def claim(path: Path, hello: bytes = b"claim\n") -> str:
    """Connect, say `hello`, and return what the pool answers ("" if it closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        data = b""
        try:
            conn.sendall(hello)
            while chunk := conn.recv(100):
                data += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the pool (before or while `hello` was sent)
        return data.decode()


def test_the_warm_pool_refuses_a_peer_of_another_uid(
    pool: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, process = pool
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert claim(path) == "none\n"  # its own user is answered

    # As laid out, `nobody` cannot even reach the socket.
    assert as_nobody(lambda: claim(path)) == "PermissionError: Permission denied"

    # Opened up on purpose (as a careless folder or socket mode would): the kernel lets
    # `nobody` connect, and the pool closes the connection unanswered, whether it asks
    # for a warm process or poses as one waiting for a flow run's environment.
    os.chmod(path.parent, 0o711)
    os.chmod(path, 0o666)
    assert as_nobody(lambda: claim(path)) == ""
    assert as_nobody(lambda: claim(path, b"ready 1\n")) == ""
    assert claim(path) == "none\n"
    process.terminate()
    _, errors = process.communicate(timeout=10)
    assert errors.count("refused a connection of another user") == 2


def test_a_launcher_does_not_hand_its_environment_to_a_pool_of_another_uid(
    tmp_path: Path,
) -> None:
    """The other side: a flow run's launcher talks only to a pool of its own user (else it
    starts cold), so a socket someone else bound gets nothing."""
    from deployments.warm import handover

    folder = Path(tempfile.mkdtemp(prefix="regjobs-test-"))
    os.chmod(folder, 0o777)
    path = folder / "warm.sock"
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pool of nobody's
        try:
            os.close(reader)
            become_nobody()
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.chmod(path, 0o666)
            server.listen(1)
            os.write(writer, b"up")
            server.settimeout(10)
            conn, _ = server.accept()
            got = b""
            try:
                conn.sendall(b"pid 1\n")
                while chunk := conn.recv(100):
                    got += chunk
            except OSError:
                pass
            os.write(writer, b"|" + got)
        finally:
            os._exit(0)
    os.close(writer)
    try:
        assert os.read(reader, 2) == b"up"
        assert handover.claim(str(path)) is None
        rest = b""
        while chunk := os.read(reader, 100):
            rest += chunk
        assert rest == b"|", "the launcher sent the pool something"
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
        shutil.rmtree(folder, ignore_errors=True)
