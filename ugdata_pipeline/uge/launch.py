"""How a training run is launched: in this process, or in ``accelerate launch`` subprocesses driven by Dagster Pipes.

The out-of-process protocol, without Dagster (the shell only supplies ``run_command``, which starts the command and
hands it ``extras`` through Pipes):

1. the run's records (and stage-2 subgraph tables) are staged as Parquet in ``<out_dir>/inputs/``;
2. the command (:func:`accelerate_command`) runs ``ugdata_pipeline.assets.train_entry`` in every process; the entry
   reads :func:`pipes_extras` back (:func:`config_from_extras`, :func:`read_staged_inputs`), trains, and the main
   process writes :data:`RESULT_FILE` (:func:`write_result`);
3. :func:`read_result` rebuilds the :class:`~ugdata_pipeline.uge.train.TrainResult` from the run folder: the figures
   from :data:`RESULT_FILE`, the history and curve from the files ``train`` writes itself.

Paths in the result are derived from ``out_dir``, never sent back, so a pod that mounts the data root elsewhere
reports the same run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ugdata_pipeline.atomic_files import atomic_writer, write_text_atomic
from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import CorruptFileError
from ugdata_pipeline.uge.train import TrainConfig, TrainResult

__all__ = [
    "LAUNCHERS",
    "Launch",
    "accelerate_command",
    "config_from_extras",
    "launcher",
    "pipes_extras",
    "read_result",
    "read_staged_inputs",
    "stage_inputs",
    "write_result",
]

LAUNCHERS: tuple[str, ...] = ("in_process", "accelerate")
ENTRY_MODULE = "ugdata_pipeline.assets.train_entry"
RESULT_FILE = "pipes_result.json"
_RECORDS, _NODES, _EDGES = "records.parquet", "subgraph_nodes.parquet", "subgraph_edges.parquet"

#: ``(command, extras)``: run ``command`` to completion with ``extras`` sent through Pipes (the Dagster shell's part)
RunCommand = Callable[[list[str], dict[str, Any]], None]


class Launch(Protocol):
    """Trains one run elsewhere: the run's records, its subgraphs (stage 2), its config and parent checkpoint."""

    def __call__(
        self, records: pd.DataFrame, subgraphs: SubgraphTables | None, config: TrainConfig, init_from: Path | None
    ) -> TrainResult: ...


def accelerate_command(*, num_processes: int, precision: str, python: str = sys.executable) -> list[str]:
    """``python -m accelerate.commands.launch ... -m ugdata_pipeline.assets.train_entry``."""
    return [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "--mixed_precision",
        precision,
        "-m",
        ENTRY_MODULE,
    ]


def pipes_extras(config: TrainConfig, *, inputs: Path, root: Path, init_from: Path | None) -> dict[str, Any]:
    """What the training subprocesses receive through Pipes (JSON); read back by :func:`config_from_extras`."""
    return {
        "inputs": str(inputs),
        "root": str(root),
        "config": config.to_dict(),
        "init_from": str(init_from) if init_from else None,
    }


def config_from_extras(extras: dict[str, Any]) -> TrainConfig:
    """The :class:`~ugdata_pipeline.uge.train.TrainConfig` the launcher sent (:func:`pipes_extras`)."""
    return TrainConfig.from_dict(extras["config"])


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_writer(path) as handle:
        frame.to_parquet(handle, index=False)


def stage_inputs(folder: Path, records: pd.DataFrame, subgraphs: SubgraphTables | None) -> Path:
    """Write the run's records (and subgraph tables) to ``folder`` for the subprocesses; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_parquet(folder / _RECORDS, records)
    if subgraphs is not None:
        _write_parquet(folder / _NODES, subgraphs.nodes)
        _write_parquet(folder / _EDGES, subgraphs.edges)
    return folder


def read_staged_inputs(folder: Path) -> tuple[pd.DataFrame, SubgraphTables | None]:
    """The records and subgraph tables :func:`stage_inputs` wrote (no subgraphs for stage 1)."""
    records = pd.read_parquet(folder / _RECORDS)
    if not (folder / _NODES).exists():
        return records, None
    return records, SubgraphTables(pd.read_parquet(folder / _NODES), pd.read_parquet(folder / _EDGES))


def write_result(out_dir: Path, result: TrainResult) -> None:
    """The figures of a finished subprocess run, for :func:`read_result` (the main process writes it)."""
    summary = {
        "best_metrics": result.best_metrics,
        "params_trained": result.params_trained,
        "steps": result.steps,
        "samples_per_s": result.samples_per_s,
        "resumed": result.resumed,
    }
    write_text_atomic(out_dir / RESULT_FILE, json.dumps(summary), fsync=True)


def read_result(out_dir: Path) -> TrainResult:
    """
    The :class:`TrainResult` of a run a subprocess finished in ``out_dir``.

    Raises
    ------
    FileNotFoundError
        The subprocess wrote no result (it failed before the end); the message names the file.
    CorruptFileError
        The result file is not JSON.
    """
    path = out_dir / RESULT_FILE
    if not path.is_file():
        msg = f"the training subprocess wrote no {path}; it failed before finishing (see its log in the Dagster run)"
        raise FileNotFoundError(msg)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"training result {path} is truncated or corrupt ({exc}); delete it and re-materialize the model"
        raise CorruptFileError(msg) from exc
    history = out_dir / "history.csv"
    curve = out_dir / "curve.png"
    return TrainResult(
        checkpoint_dir=out_dir / "checkpoints" / "best",
        last_checkpoint_dir=out_dir / "checkpoints" / "last",
        best_metrics=summary["best_metrics"],
        history=pd.read_csv(history) if history.is_file() else pd.DataFrame(),
        curve_png=curve.read_bytes() if curve.is_file() else b"",
        params_trained=summary["params_trained"],
        steps=summary["steps"],
        samples_per_s=summary["samples_per_s"],
        resumed=summary["resumed"],
    )


def launcher(
    name: str, run_command: RunCommand | None, *, root: Path, num_processes: int = 1, precision: str = "no"
) -> Launch | None:
    """
    The launch function of launcher ``name``: None for ``in_process`` (train in this process), or one that trains
    through ``run_command`` in ``accelerate launch`` subprocesses.

    Raises
    ------
    ValueError
        ``name`` is not a known launcher, or ``accelerate`` has no ``run_command``.
    """
    if name not in LAUNCHERS:
        msg = f"trainer launcher {name!r} is unknown; use one of {', '.join(LAUNCHERS)}"
        raise ValueError(msg)
    if name == "in_process":
        return None
    if run_command is None:
        msg = "the accelerate launcher needs a run_command that starts the subprocesses (Dagster Pipes)"
        raise ValueError(msg)
    command = accelerate_command(num_processes=num_processes, precision=precision)

    def launch(
        records: pd.DataFrame, subgraphs: SubgraphTables | None, config: TrainConfig, init_from: Path | None
    ) -> TrainResult:
        out_dir = Path(config.out_dir)
        inputs = stage_inputs(out_dir / "inputs", records, subgraphs)
        (out_dir / RESULT_FILE).unlink(missing_ok=True)  # an older result must not pass for this one
        run_command(command, pipes_extras(config, inputs=inputs, root=root, init_from=init_from))
        return read_result(out_dir)

    return launch
