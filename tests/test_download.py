"""catrec.download against a real HTTP server on 127.0.0.1 that misbehaves on demand, and real zip files."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from catrec.cli import main
from catrec.download import download, extract_member
from catrec.errors import CatrecError

BODY = random.Random(0).randbytes(300_000)
HALF = len(BODY) // 2
BODY_MD5 = hashlib.md5(BODY).hexdigest()
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()
STALL_SECONDS = 1.0
FAST = {"backoff": 0.01, "timeout": 5.0}


@dataclass
class FakeServer:
    """What the handler serves, how it misbehaves, and every request it saw (path and headers)."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    # Per path, the actions for the next requests (see Handler.do_GET); then files are served normally.
    plans: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Set at teardown: ends the endless and dripping answers even if a client never hangs up.
    stopping: threading.Event = field(default_factory=threading.Event)

    def add(self, path: str, body: bytes, *plan: str) -> str:
        self.files[path] = body
        self.plans[path] = list(plan)
        return self.base_url + path

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def make_handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((self.path, dict(self.headers)))
            body = state.files.get(self.path)
            plan = state.plans.get(self.path)
            action = plan.pop(0) if plan else "serve"
            if body is None:
                self.send_error(404)
            elif action in ("500", "416"):
                self.send_error(int(action))
            elif action == "drop":  # promise the whole file, send half, hang up
                self._headers(200, len(body))
                self.wfile.write(body[:HALF])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            elif action == "stall":  # send half, then go silent for longer than the client's timeout
                self._headers(200, len(body))
                self.wfile.write(body[:HALF])
                self.wfile.flush()
                time.sleep(STALL_SECONDS)
            elif action == "corrupt":
                self._headers(200, len(body))
                self.wfile.write(bytes(b ^ 0xFF for b in body[:10]) + body[10:])
            elif action == "ignore-range":
                self._headers(200, len(body))
                self.wfile.write(body)
            elif action == "gzip-labelled":  # misconfigured servers label .gz files like this
                self._headers(200, len(body), {"Content-Encoding": "gzip"})
                self.wfile.write(body)
            elif action == "endless":  # no Content-Length, the body never ends
                self.send_response(200)
                self.end_headers()
                self._send_until_stopped(lambda: body, pause=0)
            elif action == "drip":  # announce the file, then send one byte per second
                self._headers(200, len(body))
                remaining = iter(body)
                self._send_until_stopped(lambda: bytes([next(remaining)]), pause=1.0)
            else:
                self._serve_range(body)

        def _send_until_stopped(self, chunk: Callable[[], bytes], pause: float) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, StopIteration):
                while not state.stopping.wait(pause):
                    self.wfile.write(chunk())

        def _serve_range(self, body: bytes) -> None:
            requested = self.headers.get("Range")
            if requested is None:
                self._headers(200, len(body))
                self.wfile.write(body)
                return
            start = int(requested.removeprefix("bytes=").removesuffix("-"))
            content_range = f"bytes {start}-{len(body) - 1}/{len(body)}"
            self._headers(206, len(body) - start, {"Content-Range": content_range})
            self.wfile.write(body[start:])

        def _headers(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

    return Handler


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy configured in the environment must not intercept requests to the local test server."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    state.stopping.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def part_of(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def test_download_serves_file_with_md5_and_sha256(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY)
    output = tmp_path / "raw" / "data.zip"
    result = download([url], output, md5=BODY_MD5, sha256=BODY_SHA256.upper(), **FAST)
    assert result == output
    assert output.read_bytes() == BODY
    assert hashlib.md5(output.read_bytes()).hexdigest() == BODY_MD5
    assert not part_of(output).exists()
    assert len(server.requests) == 1
    assert "Range" not in server.requests[0][1]


def test_dropped_connection_resumes_with_range(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY, "drop")
    output = tmp_path / "data.zip"
    download([url], output, md5=BODY_MD5, **FAST)
    assert output.read_bytes() == BODY
    assert len(server.requests) == 2
    assert "Range" not in server.requests[0][1]
    assert server.requests[1][1]["Range"] == f"bytes={HALF}-"


def test_server_ignoring_range_restarts_from_zero(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY, "drop", "ignore-range")
    output = tmp_path / "data.zip"
    download([url], output, md5=BODY_MD5, **FAST)
    # Appending the full 200 answer to the half we had would give 1.5x the file and need a third request.
    assert output.read_bytes() == BODY
    assert len(server.requests) == 2
    assert server.requests[1][1]["Range"] == f"bytes={HALF}-"


def test_range_not_satisfiable_restarts_from_zero(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY, "drop", "416")
    output = tmp_path / "data.zip"
    download([url], output, md5=BODY_MD5, **FAST)
    assert output.read_bytes() == BODY
    assert [headers.get("Range") for _, headers in server.requests] == [None, f"bytes={HALF}-", None]


def test_read_timeout_is_retried_and_resumed(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY, "stall")
    output = tmp_path / "data.zip"
    download([url], output, md5=BODY_MD5, backoff=0.01, timeout=STALL_SECONDS / 3)
    assert output.read_bytes() == BODY
    assert len(server.requests) == 2
    # Bytes still inside the socket buffer when the timeout struck are lost (at most one read chunk),
    # so the resume point is somewhere in the half that was sent, not necessarily its end.
    resumed_at = int(server.requests[1][1]["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= HALF


def test_http_500_is_retried(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY, "500", "500")
    output = tmp_path / "data.zip"
    download([url], output, md5=BODY_MD5, **FAST)
    assert output.read_bytes() == BODY
    assert len(server.requests) == 3


def test_persistent_500_gives_up_after_the_retries(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY, *["500"] * 10)
    output = tmp_path / "data.zip"
    with pytest.raises(CatrecError, match=r"HTTP 500 .*3 attempts") as error:
        download([url], output, retries=2, **FAST)
    assert url in str(error.value)
    assert len(server.requests) == 3
    assert not output.exists() and not part_of(output).exists()


def test_checksum_mismatch_leaves_no_file(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY, "corrupt")
    output = tmp_path / "data.zip"
    with pytest.raises(CatrecError, match=f"checksum mismatch for data.zip: expected md5 {BODY_MD5}, got"):
        download([url], output, md5=BODY_MD5, **FAST)
    assert not output.exists()
    assert not part_of(output).exists()
    assert list(tmp_path.iterdir()) == []


def test_404_is_not_retried_and_names_the_url(server: FakeServer, tmp_path: Path) -> None:
    url = server.base_url + "/missing.zip"
    output = tmp_path / "missing.zip"
    with pytest.raises(CatrecError, match="HTTP 404 Not Found") as error:
        download([url], output, **FAST)
    assert url in str(error.value)
    assert len(server.requests) == 1
    assert not output.exists() and not part_of(output).exists()


def test_falls_back_to_the_next_mirror(server: FakeServer, tmp_path: Path) -> None:
    mirror = server.add("/mirror/data.zip", BODY)
    output = tmp_path / "data.zip"
    download([server.base_url + "/gone/data.zip", mirror], output, md5=BODY_MD5, **FAST)
    assert output.read_bytes() == BODY
    assert server.paths() == ["/gone/data.zip", "/mirror/data.zip"]


def test_file_is_kept_byte_for_byte_when_labelled_gzip(server: FakeServer, tmp_path: Path) -> None:
    compressed = gzip.compress(BODY)
    url = server.add("/reviews.json.gz", compressed, "gzip-labelled")
    output = tmp_path / "reviews.json.gz"
    download([url], output, sha256=hashlib.sha256(compressed).hexdigest(), **FAST)
    assert output.read_bytes() == compressed


def test_lock_file_records_then_enforces_sha256(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY)
    output, lock = tmp_path / "data.zip", tmp_path / "checksums.lock.json"
    download([url], output, lock_file=lock, **FAST)
    assert json.loads(lock.read_text()) == {"data.zip": BODY_SHA256}

    # The same file again (hand-placed or re-downloaded) passes; a different one is rejected.
    assert download([url], output, lock_file=lock, **FAST) == output
    output.unlink()
    server.files["/data.zip"] = BODY[::-1]
    with pytest.raises(CatrecError, match=f"checksum mismatch for data.zip: expected sha256 {BODY_SHA256}"):
        download([url], output, lock_file=lock, **FAST)
    assert not output.exists() and not part_of(output).exists()

    output.write_bytes(BODY[::-1])
    requests_before = len(server.requests)
    with pytest.raises(CatrecError, match="checksum mismatch"):
        download([url], output, lock_file=lock, **FAST)
    assert len(server.requests) == requests_before
    assert json.loads(lock.read_text()) == {"data.zip": BODY_SHA256}


def test_existing_file_is_used_without_network(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY)
    output = tmp_path / "data.zip"
    output.write_bytes(BODY)
    assert download([url], output, md5=BODY_MD5, **FAST) == output
    assert server.requests == []


def test_existing_file_with_wrong_checksum_is_rejected_and_kept(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/data.zip", BODY)
    output = tmp_path / "data.zip"
    output.write_bytes(b"not the dataset")
    with pytest.raises(CatrecError, match=f"checksum mismatch for {output}"):
        download([url], output, md5=BODY_MD5, **FAST)
    assert server.requests == []
    assert output.read_bytes() == b"not the dataset"


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def test_extract_member_writes_only_that_member(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "ml-1m.zip", {"ml-1m/ratings.dat": b"1::2::5::9\n", "ml-1m/users.dat": b"x"}
    )
    output = tmp_path / "interim" / "ratings.dat"
    assert extract_member(archive, "ml-1m/ratings.dat", output) == output
    assert output.read_bytes() == b"1::2::5::9\n"
    assert sorted(p.name for p in output.parent.iterdir()) == ["ratings.dat"]


def test_extract_missing_member_lists_members(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", {"ml-1m/ratings.dat": b"", "ml-1m/users.dat": b""})
    with pytest.raises(
        CatrecError, match="no member 'ratings.dat'; members: ml-1m/ratings.dat, ml-1m/users.dat"
    ):
        extract_member(archive, "ratings.dat", tmp_path / "out" / "ratings.dat")
    assert not (tmp_path / "out" / "ratings.dat").exists()


@pytest.mark.parametrize("evil", ["../evil.txt", "data/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt"])
def test_extract_refuses_path_traversal(tmp_path: Path, evil: str) -> None:
    archive = write_zip(tmp_path / "evil.zip", {"ratings.dat": b"fine", evil: b"pwned"})
    out_dir = tmp_path / "work" / "out"
    with pytest.raises(CatrecError, match="unsafe member path") as error:
        extract_member(archive, "ratings.dat", out_dir / "ratings.dat")
    assert evil in str(error.value)
    assert not (tmp_path / "work").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


def test_extract_rejects_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"<html>captive portal</html>")
    with pytest.raises(CatrecError, match=str(archive)):
        extract_member(archive, "ratings.dat", tmp_path / "ratings.dat")


def test_cli_download(server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = server.add("/data.zip", BODY)
    output = tmp_path / "data.zip"
    assert main(["download", "--url", url, "--output", str(output), "--md5", BODY_MD5]) == 0
    assert output.read_bytes() == BODY

    missing = server.base_url + "/missing.zip"
    assert main(["download", "--url", missing, "--output", str(tmp_path / "missing.zip")]) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1
    assert missing in stderr and "404" in stderr


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``catrec`` in a process of its own, as Snakemake runs it."""
    command = [sys.executable, "-m", "catrec.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_endless_body_stops_at_max_bytes(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/endless.zip", BODY, "endless")
    output = tmp_path / "endless.zip"
    result = run_cli("download", "--url", url, "--output", str(output), "--max-bytes", "1000000")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "larger than the limit of 1000000 bytes" in result.stderr and url in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_too_large_file_falls_back_to_the_next_mirror(server: FakeServer, tmp_path: Path) -> None:
    announced = server.add("/big/data.zip", BODY)  # Content-Length over the limit: refused before any byte
    endless = server.add("/endless/data.zip", BODY, "endless")
    mirror = server.add("/mirror/data.zip", BODY)
    output = tmp_path / "data.zip"
    with pytest.raises(CatrecError, match="larger than the limit of 1000 bytes"):
        download([announced], output, md5=BODY_MD5, max_bytes=1000, **FAST)
    assert list(tmp_path.iterdir()) == []
    download([endless, mirror], output, md5=BODY_MD5, max_bytes=len(BODY), **FAST)
    assert output.read_bytes() == BODY
    assert list(tmp_path.iterdir()) == [output]


def test_slow_drip_is_abandoned_at_the_deadline(server: FakeServer, tmp_path: Path) -> None:
    url = server.add("/slow.zip", BODY, *["drip"] * 10)
    output = tmp_path / "slow.zip"
    started = time.monotonic()
    result = run_cli("download", "--url", url, "--output", str(output), "--deadline", "10", timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "slow.zip did not finish within the deadline of 10 s" in result.stderr
    assert 10 <= elapsed < 30
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("signum", "message"), [(signal.SIGTERM, ""), (signal.SIGINT, "catrec download: interrupted")]
)
def test_sigterm_or_ctrl_c_removes_the_partial_file(
    server: FakeServer, tmp_path: Path, signum: int, message: str
) -> None:
    """SIGTERM (Snakemake cancelling a job) is quiet; Ctrl-C (SIGINT) was a 33-line KeyboardInterrupt
    traceback (issue 30, failure 6): now one line. Both remove the partial file."""
    url = server.add("/slow.zip", BODY, "drip")
    output = tmp_path / "slow.zip"
    # Ctrl-C handled as in a terminal: a shell starts background jobs (`make test &`) with SIGINT ignored,
    # and Python then never raises KeyboardInterrupt.
    cli = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from catrec.cli import main; sys.exit(main())"
    )
    command = [sys.executable, "-c", cli, "download", "--url", url, "--output", str(output)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        try:
            deadline = time.monotonic() + 20
            while not part_of(output).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert part_of(output).exists(), "the download never started"
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=10)
            assert process.returncode == 128 + signum
        finally:
            process.kill()
    assert stderr.strip().splitlines() == ([message] if message else [])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "value"), [("--max-bytes", "0"), ("--deadline", "nan"), ("--deadline", "-1")]
)
def test_cli_download_refuses_bad_bounds(option: str, value: str, tmp_path: Path) -> None:
    result = run_cli(
        "download", "--url", "http://127.0.0.1:9/x", "--output", str(tmp_path / "x"), option, value
    )
    assert result.returncode == 2
    assert f"argument {option}: expected a positive finite" in result.stderr
