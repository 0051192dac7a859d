"""write_report and its tables; graph_dependence with fake fusion models that do and do not read their graph."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from ugdata_pipeline.ugbench import results_metadata, results_table, write_report
from ugdata_pipeline.ugbench.graph_check import graph_dependence
from ugdata_pipeline.ugbench.report import headline_metric, standard_pairs
from ugdata_pipeline_tests.ugbench_tests.fake_models import GraphReaderModel, PerfectModel, RandomModel


def test_headline_metric_and_standard_pairs():
    assert headline_metric("perception") == "hit@1"
    assert {headline_metric(t) for t in ("geolocation", "retrieval", "grounding")} == {"hit@5"}
    assert standard_pairs(["stage2", "baseline", "x"]) == [
        ("stage2", "baseline"),
        ("stage2", "chance"),
        ("baseline", "chance"),
        ("x", "chance"),
    ]
    assert standard_pairs(["stage1", "stage2", "stage2_no_graph"]) == [
        ("stage2", "stage1"),
        ("stage2", "stage2_no_graph"),
        ("stage1", "chance"),
        ("stage2", "chance"),
        ("stage2_no_graph", "chance"),
    ]


def test_results_table_has_one_row_per_record_group_with_chance_blind_and_models(evaluation):
    results = evaluation.results
    table = results_table(results, role="headline", models=["perfect", "random"])
    lines = table.strip().splitlines()
    assert lines[0] == (
        "| Task | Type | City | Split | Mode | Metric | n (clusters) | chance | best blind | perfect | random |"
    )
    headline = results[results["role"] == "headline"]
    assert len(lines) == 2 + headline.groupby(["task", "query_type", "city", "split", "mode"]).ngroups
    geo = next(line for line in lines if line.startswith("| geolocation | geolocation | gridtown | test | image |"))
    cells = [c.strip() for c in geo.strip("|").split("|")]
    row = headline[
        (headline["task"] == "geolocation") & (headline["city"] == "gridtown") & (headline["mode"] == "image")
    ].iloc[0]
    assert cells[5:8] == ["H@5", f"40 ({row['n_clusters']})", "25.0"]
    assert cells[8].startswith("25.0 (")  # every blind scorer is at chance on an exchangeable group
    assert cells[9].startswith("100.0 [")  # one seed: no spread
    assert " ± " in cells[10]  # two seeds: mean ± SD across seeds
    perception = next(line for line in lines if line.startswith("| perception | perception | farville"))
    assert "| H@1 |" in perception and "| 33.3 |" in perception
    reading = results_table(results, role="graph_reading")
    assert all(
        ("| grounding |" in line or "| perception |" in line) and "| fusion |" in line
        for line in reading.strip().splitlines()[2:]
    )
    assert results_table(results, role="nothing") == "_No rows._\n"


def test_results_metadata_reads_the_headline_metric_per_task(evaluation):
    meta = results_metadata(evaluation.results)
    assert meta["hit@5/geolocation/perfect"] == 1.0
    assert meta["hit@1/perception/perfect"] == 1.0
    assert 0.1 < meta["hit@5/grounding/random"] < 0.4
    assert not any("blind:" in key for key in meta)
    # perception holds 36 records per city
    assert meta["records_scored"] == 14 * 40 - 2 * 4  # each record once, whatever the modes it runs in
    # every figure a float, so the UI can plot it across materializations
    assert all(isinstance(value, float) for key, value in meta.items() if key != "records_scored"), meta


def test_write_report_writes_markdown_charts_and_tables(evaluation, tmp_path):
    report = write_report(
        evaluation,
        tmp_path / "report",
        bootstrap=50,
        notes=["three seeds per model"],
        proxies={"greenery": "perceived greenery"},
    )
    out = tmp_path / "report"
    assert report == out / "report.md"
    text = report.read_text(encoding="utf-8")
    for heading in (
        "# UGBench results",
        "## Headline",
        "## Paired comparisons",
        "## Graph reading",
        "## Blind scorers",
        "## Perception dimensions are proxies",
        "## Notes",
    ):
        assert f"\n{heading}\n" in f"\n{text}", heading
    models_line = next(line for line in text.splitlines() if line.startswith("Models (training seeds): "))
    assert all(f"{m} ({n})" in models_line for m, n in (("random", 2), ("perfect", 1), ("image_text", 1)))
    assert "records scored: 552." in models_line
    assert "- three seeds per model" in text and "- **greenery**: perceived greenery" in text
    assert "**beats chance**" not in text and "| at chance |" in text
    assert "| perfect | chance |" in text and "a better" in text
    tasks = sorted(evaluation.results["task"].unique())
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == tasks
    for png in pngs:
        assert f"![{png.stem}]({png.name})" in text
        with Image.open(png) as image:
            image.load()
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == len(evaluation.results)
    assert len(pd.read_parquet(out / "per_record.parquet")) == len(evaluation.per_record)
    comparisons = pd.read_parquet(out / "comparisons.parquet")
    assert set(zip(comparisons["a"], comparisons["b"], strict=True)) == {
        ("random", "chance"),
        ("perfect", "chance"),
        ("image_text", "chance"),
    }
    perfect = comparisons[(comparisons["a"] == "perfect") & (comparisons["metric"] == "mrr")]
    assert (perfect["verdict"] == "a better").all()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


# --- graph_dependence ----------------------------------------------------------------------------------------------


def test_a_model_that_reads_its_graph_loses_with_swapped_graphs(bench):
    model = GraphReaderModel(bench.tasks, bench.subgraph_nodes)
    out = graph_dependence(
        model, bench.tasks, subgraph_nodes=bench.subgraph_nodes, subgraph_edges=bench.subgraph_edges, bootstrap=200
    )
    assert list(out["metric"]) == ["mrr", "hit@5"]
    where = out[["a", "b", "query_type", "city", "mode"]].to_numpy()
    assert (where == ["own", "swapped", "all", "all", "fusion"]).all()
    assert (out["verdict"] == "a better").all()
    assert (out["mean_a"] == 1.0).all() and (out["lo"] > 0).all()
    # held-out records are used when there are any: farville's 160 grounding records
    assert (out["n"] == 160).all()


@pytest.mark.parametrize("model", ["perfect", "random"])
def test_a_model_that_ignores_its_graph_shows_no_difference(bench, model):
    fake = PerfectModel(bench.tasks) if model == "perfect" else RandomModel()
    out = graph_dependence(
        fake,
        bench.tasks,
        subgraph_nodes=bench.subgraph_nodes,
        subgraph_edges=bench.subgraph_edges,
        bootstrap=200,
        max_records=60,
    )
    assert (out["verdict"] == "no difference").all()
    assert (out["diff"] == 0).all()
    assert (out["n"] == 60).all()
    if model == "perfect":
        assert (out["mean_a"] == 1.0).all() and (out["mean_b"] == 1.0).all()
