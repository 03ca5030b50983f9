"""The one upload (tasks/session/uploads.py) without a server: refused for want of room before a byte is sent,
in one message that says what it needs (the file and the spare a run keeps) and what is free, with the .part
removed; a write that fails for a full disk is named the same way."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasks.commands import release as commands, shell
from tasks.connection.remote import RemoteError, Result
from tasks.layout import Layout
from tasks.session.run import DeployError
from tasks.session.uploads import send_file


class Remote:
    def __init__(self, free_kib: int, put_error: Exception | None = None):
        self.free_kib, self.put_error = free_kib, put_error
        self.scripts: list[str] = []
        self.puts: list[str] = []

    def run(self, script: str, as_root: bool = True) -> Result:
        self.scripts.append(script)
        return Result(shell.REPORT + ' {"free_kib": %d}\n' % self.free_kib, "", 0)

    def put(self, data: bytes, path: str) -> None:
        self.puts.append(path)
        if self.put_error:
            raise self.put_error


def _session(remote: Remote):
    return SimpleNamespace(layout=Layout("mysite"), remote=remote, host=SimpleNamespace(address="203.0.113.10"))


def test_a_small_file_refused_for_the_spare_says_what_it_needs_and_sends_nothing():
    remote = Remote(free_kib=10 * 1024)  # 10 MiB free: more than the file, less than the file and the spare
    with pytest.raises(DeployError) as refused:
        send_file(_session(remote), b"A=1\n" * 100, "config.env", "nothing changed")
    message = str(refused.value)
    assert message.startswith("not enough disk space on 203.0.113.10 for the upload of config.env: it needs about "
                              f"{commands.LOW_SPACE_KIB / 1024:.1f} MiB (the file's 400 B, and "
                              f"{commands.LOW_SPACE_KIB // 1024} MiB kept spare), 10.0 MiB free in "
                              "/srv/mysite/releases/."), message
    assert message.endswith("the partial upload was removed, nothing changed")
    assert "(0.0 MiB)" not in message  # the old words: a need of nothing, refused all the same
    assert remote.puts == []
    assert "rm -f" in remote.scripts[-1]  # the empty .part removed


def test_a_write_that_fails_for_a_full_disk_names_the_free_space():
    remote = Remote(free_kib=4, put_error=RemoteError("Failure: No space left on device"))
    session = _session(remote)
    remote.free_kib = 20 * 1024 + 3 * 1024  # enough when it starts...
    data = b"x" * (3 * 1024 * 1024)

    def put(data_, path):
        remote.puts.append(path)
        remote.free_kib = 4  # ...filled by something else while it writes
        raise remote.put_error
    remote.put = put
    with pytest.raises(DeployError) as refused:
        send_file(session, data, "site.dump", "nothing was restored")
    message = str(refused.value)
    assert "for the upload of site.dump: it needs about 19.0 MiB (the file's 3.0 MiB, and 16 MiB kept spare), " \
           "0.0 MiB free in /srv/mysite/releases/" in message, message
    assert message.count("not enough disk space") == 1
    assert message.endswith("the partial upload was removed, nothing was restored")
    assert "rm -f" in remote.scripts[-1]
