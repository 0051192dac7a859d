"""Out-of-process UGE training (``accelerate launch -m ugdata_pipeline.assets.train_entry``), driven by Dagster Pipes.

Runs in every DDP process; only the main process talks back to Dagster and writes the result. The protocol (what is
staged, sent and written back) is :mod:`ugdata_pipeline.uge.launch`.
"""

from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    from ugdata_pipeline.uge.launch import config_from_extras, read_staged_inputs, write_result
    from ugdata_pipeline.uge.train import train

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        records, subgraphs = read_staged_inputs(Path(extras["inputs"]))
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
        write_result(Path(config.out_dir), result)
        pipes.report_custom_message({"steps": result.steps})


if __name__ == "__main__":
    main()
