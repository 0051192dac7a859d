"""The out-of-process launcher's payload: the training config survives the JSON trip to the subprocesses unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from ugdata_pipeline.assets.train_entry import config_from_extras
from ugdata_pipeline.assets.uge import pipes_extras
from ugdata_pipeline.uge.train import TrainConfig


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
