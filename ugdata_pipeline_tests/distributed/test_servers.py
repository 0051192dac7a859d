"""The harness finds Debian's server programs where Debian puts them, and says what to install when they are missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ugdata_pipeline_tests.distributed.servers import find_server_binary


def _program(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_a_missing_server_names_itself_and_the_install_line(tmp_path) -> None:
    message = (
        f"initdb was not found on PATH or in {tmp_path}/*/bin; install the servers the distributed tests start: "
        "apt-get install -y --no-install-recommends postgresql redis-server (.ci/run does this when they are missing)"
    )
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        find_server_binary("initdb", path=str(tmp_path / "empty"), debian_root=str(tmp_path))


def test_the_newest_debian_postgresql_is_used_when_none_is_on_path(tmp_path) -> None:
    for major in ("9", "13", "15"):
        _program(tmp_path / major / "bin" / "postgres")
    _program(tmp_path / "16" / "bin" / "psql")  # a newer client-only install has no server
    assert find_server_binary("postgres", path="", debian_root=str(tmp_path)) == tmp_path / "15" / "bin" / "postgres"


def test_a_program_on_path_comes_first(tmp_path) -> None:
    on_path = _program(tmp_path / "bin" / "redis-server")
    _program(tmp_path / "debian" / "15" / "bin" / "redis-server")
    found = find_server_binary("redis-server", path=str(tmp_path / "bin"), debian_root=str(tmp_path / "debian"))
    assert found == on_path


def test_a_missing_client_package_names_the_install_command() -> None:
    from ugdata_pipeline_tests.distributed.servers import require

    with pytest.raises(RuntimeError, match=r"^no_such_client is not installed; run make install \(pip install -e"):
        require("no_such_client")
    assert require("redis").__name__ == "redis"
