"""The out-of-process launch protocol (uge.launch) without Dagster: staging, the payload, the result file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import CorruptFileError
from ugdata_pipeline.uge.launch import (
    ENTRY_MODULE,
    RESULT_FILE,
    accelerate_command,
    config_from_extras,
    launcher,
    pipes_extras,
    read_result,
    read_staged_inputs,
    write_result,
)
from ugdata_pipeline.uge.train import TrainConfig, TrainResult, train
from ugdata_pipeline_tests.uge_tests.conftest import SMALL_COMPACT

Synthetic = tuple[Path, pd.DataFrame, SubgraphTables]


def test_unknown_launcher_and_accelerate_without_a_runner_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trainer launcher 'slurm' is unknown; use one of in_process, accelerate"):
        launcher("slurm", None, root=tmp_path)
    with pytest.raises(ValueError, match="the accelerate launcher needs a run_command"):
        launcher("accelerate", None, root=tmp_path)
    assert launcher("in_process", None, root=tmp_path) is None  # train() in this process


def test_accelerate_command_runs_the_pipes_entry() -> None:
    command = accelerate_command(num_processes=4, precision="bf16", python="py")
    assert command == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "4",
        "--mixed_precision",
        "bf16",
        "-m",
        ENTRY_MODULE,
    ]


def test_the_training_config_round_trips_through_the_pipes_payload(tmp_path: Path) -> None:
    config = TrainConfig(
        stage=2,
        variant="ugdata",
        steps=7,
        seed=3,
        batch_size=16,
        lr=1e-4,
        precision="bf16",
        pair_types=("caption", "route"),
        backbone="compact",
        backbone_config={"width": 24},
        graph_encoder={"hidden_dim": 32, "edge_dim": 8},
        graph_input="shuffled",
        out_dir=str(tmp_path / "run"),
    )
    payload = json.loads(json.dumps(pipes_extras(config, inputs=tmp_path / "in", root=tmp_path, init_from=None)))
    back = config_from_extras(payload)
    assert back == config
    assert back.pair_types == ("caption", "route")  # a tuple again, as the record filter and fingerprint expect
    assert payload["init_from"] is None and payload["inputs"] == str(tmp_path / "in")


def _entry(command: list[str], extras: dict) -> None:
    """What train_entry does in the subprocess, in this process: read the payload, train, write the result."""
    payload = json.loads(json.dumps(extras))  # the JSON trip Pipes makes
    records, subgraphs = read_staged_inputs(Path(payload["inputs"]))
    config = config_from_extras(payload)
    result = train(records, root=payload["root"], subgraphs=subgraphs, config=config, progress=False)
    write_result(Path(config.out_dir), result)


def test_launcher_round_trips_records_config_and_result(synthetic: Synthetic, tmp_path: Path) -> None:
    root, records, subgraphs = synthetic
    sent: list[dict] = []

    def run_command(command: list[str], extras: dict) -> None:
        sent.append(extras)
        _entry(command, extras)

    launch = launcher("accelerate", run_command, root=root, num_processes=1, precision="no")
    config = TrainConfig(stage=1, steps=2, batch_size=8, out_dir=str(tmp_path / "run"), backbone_config=SMALL_COMPACT)
    stage1 = records[records["stage"] == 1].reset_index(drop=True)
    result = launch(stage1, subgraphs, config, None)
    # the subprocess saw the same records and subgraph tables, and the same config
    staged, staged_graphs = read_staged_inputs(Path(sent[0]["inputs"]))
    pd.testing.assert_frame_equal(staged.drop(columns="hard_negatives"), stage1.drop(columns="hard_negatives"))
    assert [list(v) for v in staged["hard_negatives"]] == [list(v) for v in stage1["hard_negatives"]]
    pd.testing.assert_frame_equal(staged_graphs.nodes, subgraphs.nodes)
    assert config_from_extras(sent[0]) == config and sent[0]["init_from"] is None
    # the result read back equals what train() reports for the same run folder (a finished run is read, not redone)
    direct = train(stage1, root=root, config=config, progress=False)
    assert isinstance(result, TrainResult)
    assert result.checkpoint_dir == direct.checkpoint_dir == tmp_path / "run" / "checkpoints" / "best"
    assert result.last_checkpoint_dir == direct.last_checkpoint_dir
    assert (result.steps, result.best_metrics, result.params_trained) == (2, direct.best_metrics, direct.params_trained)
    assert result.samples_per_s > 0 and not result.resumed  # the figures of the subprocess run, not of the reread
    pd.testing.assert_frame_equal(result.history, direct.history)
    assert result.curve_png == direct.curve_png and result.curve_png[:4] == b"\x89PNG"


def test_a_subprocess_that_wrote_no_result_is_named(tmp_path: Path) -> None:
    launch = launcher("accelerate", lambda command, extras: None, root=tmp_path)
    records = pd.DataFrame({"record_id": ["a"]})
    config = TrainConfig(out_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RESULT_FILE).write_text("{}")  # an older run's result must not pass for this one
    with pytest.raises(FileNotFoundError, match=rf"the training subprocess wrote no {tmp_path / 'run' / RESULT_FILE}"):
        launch(records, None, config, None)
    (tmp_path / "run" / RESULT_FILE).write_text('{"steps": 2')
    with pytest.raises(CorruptFileError, match=r"pipes_result.json is truncated or corrupt"):
        read_result(tmp_path / "run")
