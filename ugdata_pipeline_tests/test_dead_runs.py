"""A run killed while it holds the ``gpu`` pool slot must not block the next run (issue 13, item 1).

Real processes: a one-asset job in the ``gpu`` pool, started the way ``make run`` starts runs (``ugdata launch``
through a workspace) or with ``dagster job execute``, killed with SIGKILL while its step holds the slot, then the
release command ``make run`` calls first, then the next execution of the same job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from ugdata_pipeline.dead_runs import release_dead_runs

DEFINITIONS = '''
import os
import time

import dagster as dg


@dg.asset(pool="gpu")
def holds_the_gpu() -> None:
    """Sleeps while GPU_STEP_SLEEP_S says so (the run the test kills), else returns at once."""
    time.sleep(float(os.environ.get("GPU_STEP_SLEEP_S", "0")))


defs = dg.Definitions(assets=[holds_the_gpu], jobs=[dg.define_asset_job("gpu_job", selection=[holds_the_gpu])])
'''

INSTANCE = """
storage:
  sqlite:
    base_dir: {home}
telemetry:
  enabled: false
concurrency:
  pools:
    granularity: op
    default_limit: 1
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(textwrap.dedent(INSTANCE.format(home=home)), encoding="utf-8")
    (tmp_path / "gpu_defs.py").write_text(DEFINITIONS, encoding="utf-8")
    (tmp_path / "workspace.yaml").write_text("load_from:\n  - python_file: gpu_defs.py\n", encoding="utf-8")
    return home


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), **extra}


def _command(home: Path, launcher: str) -> list[str]:
    if launcher == "launch":  # make run: through the workspace's code location, executed in the launching process
        workspace = home.parent / "workspace.yaml"
        return [
            sys.executable,
            "-m",
            "ugdata_pipeline.cli",
            "launch",
            "gpu_job",
            "--in-process",
            "--workspace",
            str(workspace),
        ]
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "job", "execute", "-f", str(home.parent / "gpu_defs.py"), "-j", "gpu_job"]


def _execute(home: Path, log: Path, launcher: str, **env: str) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            _command(home, launcher),
            env=_env(home, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _claimed(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}


def _wait_for_claim(instance: dg.DagsterInstance, process: subprocess.Popen, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        claimed = _claimed(instance)
        if claimed:
            return claimed.pop()
        assert process.poll() is None, "the run ended before its gpu step started"
        time.sleep(0.5)
    raise AssertionError("the gpu step never claimed its pool slot")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["launch", "dagster job execute"])
def test_a_killed_run_releases_its_gpu_slot_and_the_next_run_finishes(home: Path, launcher: str) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        victim = _execute(home, home / "victim.log", launcher, GPU_STEP_SLEEP_S="600")
        try:
            run_id = _wait_for_claim(instance, victim)
            # alive: a running run is never released
            assert release_dead_runs(instance) == []
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        finally:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()

        # the bug: the dead run stays STARTED and keeps the slot, so the next run would wait forever
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        assert _claimed(instance) == {run_id}

        release = subprocess.run(
            [sys.executable, "-m", "ugdata_pipeline.cli", "release-dead-runs"],
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert f"released run {run_id} of gpu_job: it was STARTED with no live process" in release.stdout
        assert _claimed(instance) == set()
        failed = instance.get_run_by_id(run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE

        nxt = _execute(home, home / "next.log", launcher)
        assert nxt.wait(timeout=180) == 0, (home / "next.log").read_text()
        runs = instance.get_runs(dg.RunsFilter(job_name="gpu_job"))
        assert sorted(r.status.value for r in runs) == ["FAILURE", "SUCCESS"]
        # a second release finds nothing to do
        assert release_dead_runs(instance) == []
