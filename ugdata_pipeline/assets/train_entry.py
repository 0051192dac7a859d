"""Out-of-process UGE training (``accelerate launch -m ugdata_pipeline.assets.train_entry``), driven by Dagster Pipes.

Runs in every DDP process; only the main process talks back to Dagster and writes the summary.
"""

import json
from pathlib import Path

import pandas as pd
from dagster_pipes import open_dagster_pipes


def config_from_extras(extras: dict):
    """The :class:`~ugdata_pipeline.uge.train.TrainConfig` the launcher sent (``assets.uge.pipes_extras``)."""
    from ugdata_pipeline.uge.train import TrainConfig

    return TrainConfig.from_dict(extras["config"])


def main() -> None:
    from ugdata_pipeline.uge.data import SubgraphTables
    from ugdata_pipeline.uge.train import train

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        inputs = Path(extras["inputs"])
        records = pd.read_parquet(inputs / "records.parquet")
        nodes_path, edges_path = inputs / "subgraph_nodes.parquet", inputs / "subgraph_edges.parquet"
        subgraphs = (
            SubgraphTables(pd.read_parquet(nodes_path), pd.read_parquet(edges_path)) if nodes_path.exists() else None
        )
        config = config_from_extras(extras)
        result = train(
            records,
            root=extras["root"],
            subgraphs=subgraphs,
            config=config,
            init_from=extras["init_from"],
            progress=False,
            on_step=lambda step, figures: pipes.log.info(f"step {step}: {figures}") if step % 20 == 0 else None,
        )
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        out_dir = Path(config.out_dir)
        (out_dir / "loss_curve.png").write_bytes(result.curve_png)
        summary = {
            "checkpoint_dir": str(result.checkpoint_dir),
            "last": str(result.last_checkpoint_dir),
            "best_metrics": result.best_metrics,
            "params_trained": result.params_trained,
            "steps": result.steps,
            "samples_per_s": result.samples_per_s,
            "resumed": result.resumed,
        }
        (out_dir / "pipes_result.json").write_text(json.dumps(summary), encoding="utf-8")
        pipes.report_custom_message({"steps": result.steps})


if __name__ == "__main__":
    main()
