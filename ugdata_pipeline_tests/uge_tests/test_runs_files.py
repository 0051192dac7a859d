"""The run pointer of a model (``models/<name>/current.json``) gets the umask's mode, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

from ugdata_pipeline.uge.runs import _pointer, _write_pointer, current_fingerprint


def test_pointer_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        checkpoint = tmp_path / "models" / "stage1" / "runs" / "abc" / "best"
        _write_pointer(tmp_path, "stage1", 0, "abc", checkpoint, ["helsinki"])
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(_pointer(tmp_path, "stage1").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o640
    assert current_fingerprint(tmp_path, "stage1", 0) == "abc"
