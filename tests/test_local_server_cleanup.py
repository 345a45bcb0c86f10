"""Local servers are stopped by their PIDs however the command that started them ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionflow._errors import ConfigError
from sessionflow.local_servers import DynamoDBLocal, RedisServer, find_dynamodb_local
from tests.clients import sessionflow_command


def _children(pid: int) -> set[int]:
    """PIDs whose parent is `pid`, read from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: set[int], seconds: float = 20) -> set[int]:
    deadline = time.monotonic() + seconds
    while (alive := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _owner(directory: Path) -> int | None:
    """The PID a server's scratch directory names as its owner, if it names one yet."""
    try:
        return int((directory / "owner.pid").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """An empty TMPDIR for the command under test: its servers' directories go there."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    return directory


def _start(
    args: list[str], scratch: Path, ready: str, *, interrupt_ignored: bool = False
) -> tuple[subprocess.Popen[str], set[int]]:
    """Run ``sessionflow args`` until it prints `ready`; return it and its server processes.

    `interrupt_ignored` starts it as a shell without job control starts a background job
    (``command &`` in a script or a CI step): with SIGINT ignored.
    """
    interrupt = "signal.SIG_IGN" if interrupt_ignored else "signal.default_int_handler"
    command = sessionflow_command(
        args,
        environ={"TMPDIR": str(scratch)},
        before=f"import signal; signal.signal(signal.SIGINT, {interrupt}); ",
    )
    assert command.stdout is not None
    seen = []
    for line in command.stdout:
        seen.append(line)
        if ready in line:
            break
    else:
        pytest.fail(f"never printed {ready!r}:\n{''.join(seen)}")
    servers = _children(command.pid)
    assert servers, "the command started no server process"
    return command, servers


def _finish(command: subprocess.Popen[str], servers: set[int]) -> None:
    """Stop whatever a failed test left running, by PID."""
    command.kill()
    command.wait(timeout=10)
    assert command.stdout is not None
    command.stdout.close()
    for pid in servers:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(find_dynamodb_local() is None, reason="needs DynamoDB Local")
@pytest.mark.parametrize(
    ("moment", "interrupt_ignored", "seconds_per_stage"),
    [
        # requests hang on a frozen server, and the clean-up must not wait on them (the
        # pause lasts at least 2 s: time for the signal to land inside it)
        pytest.param("DynamoDB paused", False, "4", id="secondary-paused-foreground"),
        # the backfill's Redis scan, where a cancellation can be lost (Python 3.11): the
        # resumed backfill runs for seconds whatever the stages last, and the default
        # traffic keeps Redis busy enough for the loss to happen without the guard
        pytest.param("backfill process killed", True, "1", id="backfill-background"),
    ],
)
def test_sigterm_stops_the_drill_and_its_servers_and_removes_their_directories(
    scratch: Path, moment: str, interrupt_ignored: bool, seconds_per_stage: str
) -> None:
    # Light traffic where the point is a frozen server, not the load.
    traffic = ["--workers", "4", "--rate", "80"] if moment == "DynamoDB paused" else []
    command, servers = _start(
        [
            "drill",
            "--sessions",
            "500",
            "--seconds-per-stage",
            seconds_per_stage,
            *traffic,
            "--report",
            os.devnull,
        ],
        scratch,
        ready=moment,
        interrupt_ignored=interrupt_ignored,
    )
    try:
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=30) == 128 + signal.SIGTERM
        assert _wait_gone(servers) == set()
        assert sorted(p.name for p in scratch.iterdir()) == []
    finally:
        _finish(command, servers)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv")
def test_a_hard_kill_of_the_command_takes_its_servers_with_it(scratch: Path) -> None:
    command, servers = _start(["serve", "--port", "0"], scratch, ready="Uvicorn running")
    try:
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=10)
        assert _wait_gone(servers) == set()
    finally:
        _finish(command, servers)


def test_a_server_that_fails_to_start_leaves_no_process_and_no_directory(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    server = RedisServer(binary=shutil.which("false") or "/bin/false")
    with pytest.raises(RuntimeError, match="exited early"), server:
        pass
    assert server.process is None
    assert list(scratch.iterdir()) == []


def test_a_server_that_never_answers_is_stopped_by_its_pid(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    sleeper = shutil.which("sleep") or "/bin/sleep"
    # `sleep` ignores the arguments after its first and never answers PING
    server = RedisServer(binary=sleeper, extra_args=())
    monkeypatch.setattr(server, "start", lambda: _launch_never_ready(server, sleeper))
    with pytest.raises(TimeoutError), server:
        pass
    assert server.process is None
    assert list(scratch.iterdir()) == []


def _launch_never_ready(server: RedisServer, sleeper: str) -> RedisServer:
    def never_ready() -> None:
        pid = server.pid
        assert _alive(pid)
        raise TimeoutError(f"pid {pid} never answered")

    server._launch([sleeper, "600"], never_ready)
    return server


def test_a_missing_dynamodb_local_leaves_no_scratch_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shm = Path("/dev/shm")
    before = set(shm.glob("sessionflow-*")) if shm.is_dir() else set()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SESSIONFLOW_DYNAMODB_LOCAL_DIR", raising=False)
    for on_disk in (False, True):
        with pytest.raises(ConfigError, match="DynamoDB Local not found"):
            DynamoDBLocal(on_disk=on_disk)
    after = set(shm.glob("sessionflow-*")) if shm.is_dir() else set()
    # another test worker may start its own DynamoDB Local meanwhile: only ours count
    assert {d for d in after - before if _owner(d) == os.getpid()} == set()
    assert list(tmp_path.iterdir()) == []


def test_directories_a_killed_command_left_behind_are_removed_at_the_next_start(
    monkeypatch: pytest.MonkeyPatch, scratch: Path
) -> None:
    """SIGKILL leaves directories no one removes; in /dev/shm they hold memory."""
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    finished = subprocess.Popen([shutil.which("true") or "/bin/true"])
    finished.wait()  # a PID that has just ended
    left = {
        "abandoned": str(finished.pid),  # its owner has ended
        "in-use": str(os.getpid()),  # its owner runs
        "unknown": None,  # no owner file: from an older version, or being made right now
    }
    for name, owner in left.items():
        directory = scratch / f"sessionflow-redis-{name}"
        directory.mkdir()
        if owner is not None:
            (directory / "owner.pid").write_text(owner)
    (scratch / "sessionflow-drill-x").mkdir()  # another kind of directory: not looked at

    with RedisServer() as server:
        assert (server.directory / "owner.pid").read_text() == str(os.getpid())
    kept = ["sessionflow-drill-x", "sessionflow-redis-in-use", "sessionflow-redis-unknown"]
    assert sorted(p.name for p in scratch.iterdir()) == kept


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    before = _children(os.getpid())
    yield
    assert {pid for pid in _children(os.getpid()) - before if _alive(pid)} == set()
