"""cmd.run(on_output=...): output reaches the sink while the child runs, with real children."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from npulab import cmd
from npulab.cmd import Completed
from npulab.errors import CommandError
from npulab.transport.local import LocalTransport

PY = sys.executable


def _child(source: str) -> tuple[str, str, str]:
    return (PY, "-c", textwrap.dedent(source))


class Recorder:
    """A sink that keeps every call and the text seen so far per stream."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.seen = {"stdout": "", "stderr": ""}

    def __call__(self, stream: str, text: str) -> None:
        self.calls.append((stream, text))
        self.seen[stream] += text


def _wait_for_file_child(flag: Path, flag_err: Path) -> tuple[str, str, str]:
    # prints, then blocks until the sink (in the parent) has reacted: only streaming gets past
    return _child(f"""
        import os, sys, time
        def wait(path):
            end = time.monotonic() + 10
            while not os.path.exists(path):
                if time.monotonic() > end:
                    sys.exit(3)
                time.sleep(0.02)
        print("ready", flush=True)
        wait({str(flag)!r})
        sys.stderr.write("err-ready\\n"); sys.stderr.flush()
        wait({str(flag_err)!r})
        print("done")
    """)


@pytest.mark.integration
def test_sink_sees_stdout_and_stderr_before_the_child_ends(tmp_path: Path) -> None:
    flag, flag_err = tmp_path / "stdout-seen", tmp_path / "stderr-seen"
    rec = Recorder()

    def sink(stream: str, text: str) -> None:
        rec(stream, text)
        if "ready\n" in rec.seen["stdout"]:
            flag.touch()
        if "err-ready\n" in rec.seen["stderr"]:
            flag_err.touch()

    result = cmd.run(*_wait_for_file_child(flag, flag_err), on_output=sink, quiet=True)
    assert result.returncode == 0  # 3 if the sink had only seen the output at the end
    assert (result.stdout, result.stderr) == ("ready\ndone\n", "err-ready\n")
    assert rec.seen == {"stdout": result.stdout, "stderr": result.stderr}
    # The first chunk is (part of) the first line: print() may reach the pipe in two writes.
    assert rec.calls[0][0] == "stdout"
    assert "ready\n".startswith(rec.calls[0][1])


@pytest.mark.integration
def test_timeout_raises_with_the_partial_output() -> None:
    rec = Recorder()
    child = _child("""
        import sys, time
        print("started", flush=True)
        sys.stderr.write("warming up\\n"); sys.stderr.flush()
        time.sleep(30)
    """)
    start = time.monotonic()
    with pytest.raises(CommandError) as info:
        cmd.run(*child, timeout=1.5, on_output=rec, quiet=True)
    assert time.monotonic() - start < 10
    err = info.value
    assert err.returncode is None
    assert "timed out after 1.5s" in str(err)
    assert (err.stdout, err.stderr) == ("started\n", "warming up\n")
    assert rec.seen == {"stdout": "started\n", "stderr": "warming up\n"}


@pytest.mark.integration
def test_a_raising_sink_kills_and_reaps_the_child() -> None:
    pids: list[int] = []

    def sink(stream: str, text: str) -> None:
        pids.append(int(text.split()[0]))
        msg = "log disk full"
        raise OSError(msg)

    child = _child("""
        import os, time
        print(os.getpid(), flush=True)
        time.sleep(30)
    """)
    start = time.monotonic()
    with pytest.raises(OSError, match="log disk full"):
        cmd.run(*child, on_output=sink, quiet=True)
    assert time.monotonic() - start < 10
    with pytest.raises(ProcessLookupError):  # gone and reaped: a zombie would still answer
        os.kill(pids[0], 0)
    assert not [t for t in threading.enumerate() if t.name.startswith("npulab-std")]


@pytest.mark.integration
def test_completed_equals_the_result_without_a_sink() -> None:
    child = _child("""
        import sys
        sys.stdout.write(sys.stdin.read().upper())
        sys.stdout.buffer.write(b"crlf\\r\\nlone cr\\rbad \\xff byte\\n")
        sys.stdout.flush()
        sys.stderr.write("to stderr\\r\\n")
        sys.exit(2)
    """)
    plain = cmd.run(*child, input_text="in: é\n", check=False, quiet=True)
    rec = Recorder()
    streamed = cmd.run(*child, input_text="in: é\n", check=False, quiet=True, on_output=rec)
    assert streamed == plain
    assert plain.stdout == "IN: É\ncrlf\nlone cr\nbad \ufffd byte\n"
    assert rec.seen == {"stdout": plain.stdout, "stderr": plain.stderr}
    errors = []
    for sink in (None, Recorder()):
        with pytest.raises(CommandError) as info:
            cmd.run(*child, input_text="x", quiet=True, on_output=sink)
        errors.append((info.value.returncode, info.value.stdout, info.value.stderr))
    assert errors[0] == errors[1]
    assert errors[0][0] == 2


@pytest.mark.integration
def test_multibyte_character_split_across_reads_is_decoded_whole() -> None:
    rec = Recorder()
    child = _child("""
        import sys, time
        out = sys.stdout.buffer
        out.write(b"caf\\xc3"); out.flush()
        time.sleep(0.3)
        out.write(b"\\xa9!"); out.flush()
    """)
    result = cmd.run(*child, on_output=rec, quiet=True)
    assert result.stdout == "café!"
    assert "".join(text for _, text in rec.calls) == "café!"
    assert all("\ufffd" not in text for _, text in rec.calls)
    assert len(rec.calls) >= 2  # really arrived in two reads


@pytest.mark.integration
def test_local_transport_streams_run() -> None:
    rec = Recorder()
    result = LocalTransport().run([PY, "-c", "print('hi')"], on_output=rec)
    assert rec.seen["stdout"] == result.stdout == "hi\n"


def test_local_transport_hands_the_sink_to_run_script(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def fake_run(*argv: str, **kw: Any) -> Completed:
        seen.append(kw["on_output"])
        return Completed(argv=argv, returncode=0, stdout="", stderr="")

    monkeypatch.setattr(cmd, "run", fake_run)
    rec = Recorder()
    LocalTransport().run_script("echo hi", shell="cmd", on_output=rec)
    assert seen == [rec]


def test_dry_run_and_misuse_never_start_a_process() -> None:
    rec = Recorder()  # unit test: starting a process here would raise (tests/conftest.py)
    result = cmd.run(PY, "-c", "print(1)", dry_run=True, on_output=rec)
    assert result.dry_run
    assert rec.calls == []
    with pytest.raises(ValueError, match="capture=True"):
        cmd.run(PY, "-c", "print(1)", capture=False, on_output=rec)
    with pytest.raises(CommandError, match="command not found"):
        cmd.run("npulab-no-such-tool", on_output=rec)
