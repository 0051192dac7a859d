"""UGBench reports: headline and graph-reading tables with blind scorers and chance, paired comparisons, charts.

Every figure is read off an :class:`~.evaluate.Evaluation`: a model's value is the mean over its training seeds
(``± SD`` across seeds when there are several), the bracket its 95 % interval from a bootstrap over spatial
clusters, and every comparison is paired on the same records. A row's **headline metric** is Hit@5 for tasks with
20 candidates and Hit@1 for perception (three candidates: Hit@5 is 1 for everyone). Rows are split into the
headline table and the *graph reading* table (fusion rows whose query graph holds the answer).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ugdata_pipeline.atomic_files import write_file_atomic
from ugdata_pipeline.table_files import frame_to_parquet_bytes
from ugdata_pipeline.ugbench.evaluate import CHANCE, Evaluation, compare

logger = logging.getLogger(__name__)

_LABELS = {"hit@1": "H@1", "hit@3": "H@3", "hit@5": "H@5", "hit@10": "H@10", "mrr": "MRR", "mean_rank": "Rank"}
_KEYS = ["task", "query_type", "city", "split", "mode"]
#: Comparisons the report makes when both models are present: (a, b, what it tests).
STANDARD_COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("stage2", "baseline", "UGE against the matched generic-caption control"),
    ("stage1", "baseline", "spatial text (stage 1) against generic captions"),
    ("stage2", "stage1", "what stage 2 adds"),
    ("stage2", "stage2_shuffled_graphs", "own graphs against graphs of other images (same training)"),
    ("stage2", "stage2_no_graph", "graphs against no graph (same training)"),
)


def headline_metric(task: str) -> str:
    """The metric a task's row is read by: Hit@1 for perception (three candidates), else Hit@5."""
    return "hit@1" if task == "perception" else "hit@5"


def _pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.1f}"


def _cell(row: Mapping[str, object], metric: str) -> str:
    value = float(row[metric])  # type: ignore[arg-type]
    text = _pct(value)
    sd = float(row.get(f"{metric}_seed_sd", float("nan")))  # type: ignore[arg-type]
    if int(row.get("n_seeds", 1)) > 1 and math.isfinite(sd):  # type: ignore[call-overload]
        text += f" ± {100 * sd:.1f}"
    lo, hi = float(row[f"{metric}_lo"]), float(row[f"{metric}_hi"])  # type: ignore[arg-type]
    if math.isfinite(lo):
        text += f" [{_pct(lo)}, {_pct(hi)}]"
    return text


def results_table(results: pd.DataFrame, *, role: str, models: Sequence[str] | None = None) -> str:
    """
    One Markdown row per (task, type, city, split, mode) of ``role``: n, chance, the best blind scorer, each model.

    Cells are the row's headline metric (:func:`headline_metric`) in percent, ``± SD`` over seeds and the clustered
    95 % interval.
    """
    part = results[results["role"] == role]
    if part.empty:
        return "_No rows._\n"
    models = list(models) if models is not None else list(dict.fromkeys(part.loc[part["kind"] == "model", "model"]))
    header = ["Task", "Type", "City", "Split", "Mode", "Metric", "n (clusters)", "chance", "best blind", *models]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 6 + "---:|" * (len(header) - 6)]
    for key, group in part.groupby(_KEYS, sort=True):
        metric = headline_metric(str(key[0]))
        models_rows = {r["model"]: r for r in group[group["kind"] == "model"].to_dict("records")}
        blind = group[group["kind"] == "blind"]
        first = group.iloc[0]
        best_blind = "–"
        if len(blind):
            top = blind.loc[blind[metric].astype(float).idxmax()]
            best_blind = f"{_pct(float(top[metric]))} ({str(top['model']).removeprefix('blind:')})"
        cells = [
            *(str(k) for k in key),
            _LABELS[metric],
            f"{int(first['n'])} ({int(first['n_clusters'])})",
            _pct(float(first[f"chance_{metric}"])),
            best_blind,
        ]
        cells += [_cell(models_rows[m], metric) if m in models_rows else "–" for m in models]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def blind_table(results: pd.DataFrame) -> str:
    """Every blind scorer on every headline row: Hit@1 and Hit@5 against chance, flagged beyond +5 points."""
    from ugdata_pipeline.ugbench.blind import MAX_EXCESS_OVER_CHANCE

    part = results[(results["kind"] == "blind") & (results["role"] == "headline")]
    if part.empty:
        return "_No blind scorers were run._\n"
    lines = [
        "| Task | Type | City | Split | Mode | Scorer | H@1 (chance) | H@5 (chance) | verdict |",
        "|---|---|---|---|---|---|---:|---:|---|",
    ]
    for row in part.sort_values([*_KEYS, "model"]).to_dict("records"):
        excess = max(float(row[m]) - float(row[f"chance_{m}"]) for m in ("hit@1", "hit@5"))
        verdict = "**beats chance**" if excess > MAX_EXCESS_OVER_CHANCE else "at chance"
        lines.append(
            f"| {row['task']} | {row['query_type']} | {row['city']} | {row['split']} | {row['mode']} | "
            f"{row['model']} | {_pct(row['hit@1'])} ({_pct(row['chance_hit@1'])}) | {_pct(row['hit@5'])} "
            f"({_pct(row['chance_hit@5'])}) | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def comparisons_table(comparisons: pd.DataFrame) -> str:
    """Paired differences in points with their clustered interval and verdict, the headline metric per task."""
    if comparisons.empty:
        return "_No comparisons (fewer than two models)._\n"
    rows = comparisons[comparisons["metric"] == comparisons["task"].map(headline_metric)]
    lines = [
        "| Task | Type | City | Split | Mode | a | b | metric | a | b | a − b [95 % CI] | verdict |",
        "|---|---|---|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for row in rows.sort_values(["role", *_KEYS, "a", "b"]).to_dict("records"):
        verdict = row["verdict"]
        if row["b"] != CHANCE and row["b_at_chance"] and verdict == "a better":
            verdict += f" (but {row['b']} is at chance)"
        sd = f" (seed SD {100 * row['seed_sd']:.1f})" if math.isfinite(row["seed_sd"]) else ""
        lines.append(
            f"| {row['task']} | {row['query_type']} | {row['city']} | {row['split']} | {row['mode']} | "
            f"{row['a']} | {row['b']} | {_LABELS[row['metric']]} | {_pct(row['mean_a'])} | "
            f"{_pct(row['mean_b'])} | {100 * row['diff']:+.1f} [{100 * row['lo']:+.1f}, "
            f"{100 * row['hi']:+.1f}]{sd} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart_png(results: pd.DataFrame, *, task: str, dpi: int = 100) -> bytes:
    """
    PNG bar chart of one task's headline metric: one group per (type, city, split, mode), one bar per model,
    clustered 95 % interval whiskers, chance as a dashed tick and the best blind scorer as a grey bar.
    """
    metric = headline_metric(task)
    part = results[(results["task"] == task) & (results["kind"] == "model")]
    blind = results[(results["task"] == task) & (results["kind"] == "blind")]
    models = list(dict.fromkeys(part["model"]))
    label = part["query_type"].where(part["query_type"] != task, "") + " " + part["city"] + "/" + part["mode"]
    part = part.assign(group=label.str.strip())
    groups = sorted(part["group"].unique())
    fig = Figure(figsize=(max(4.5, 0.5 * len(groups) * (len(models) + 1) + 2), 3.8), dpi=dpi)
    ax = fig.add_subplot()
    width = 0.8 / (len(models) + 1)
    x = np.arange(len(groups))
    for i, model in enumerate(models):
        rows = part[part["model"] == model].set_index("group").reindex(groups)
        value = rows[metric].to_numpy(dtype=float)
        # clipped at 0: a percentile interval may miss the point estimate (by rounding, or a skewed resample)
        err = np.clip(
            np.vstack(
                [
                    np.nan_to_num(value - rows[f"{metric}_lo"].to_numpy(dtype=float)),
                    np.nan_to_num(rows[f"{metric}_hi"].to_numpy(dtype=float) - value),
                ]
            ),
            0.0,
            None,
        )
        ax.bar(x + (i - len(models) / 2) * width, value, width, yerr=err, capsize=2, label=model)
    if len(blind):
        keyed = blind.assign(
            group=(
                blind["query_type"].where(blind["query_type"] != task, "") + " " + blind["city"] + "/" + blind["mode"]
            ).str.strip()
        )
        best = keyed.groupby("group")[metric].max().reindex(groups).to_numpy(dtype=float)
        ax.bar(x + (len(models) / 2) * width, best, width, color="0.75", label="best blind scorer")
    chance = part.groupby("group")[f"chance_{metric}"].first().reindex(groups).to_numpy(dtype=float)
    ax.hlines(chance, x - 0.45, x + 0.45, colors="k", linestyles="dashed", linewidth=1, label="chance")
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(_LABELS[metric])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"UGBench {task}: {_LABELS[metric]} (95% clustered CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def results_metadata(results: pd.DataFrame) -> dict[str, float | int]:
    """Plottable figures for asset metadata: each model's mean headline metric per task, over headline rows."""
    # a record runs in up to two modes: count it once
    records = int(results.groupby(_KEYS[:4])["n"].max().sum()) if len(results) else 0
    meta: dict[str, float | int] = {"records_scored": records}
    heads = results[(results["role"] == "headline") & (results["kind"] == "model")]
    for (task, model), group in heads.groupby(["task", "model"]):
        meta[f"{headline_metric(str(task))}/{task}/{model}"] = round(float(group[headline_metric(str(task))].mean()), 4)
    return meta


def standard_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """The :data:`STANDARD_COMPARISONS` whose models are present, then every model against chance."""
    present = set(models)
    pairs = [(a, b) for a, b, _ in STANDARD_COMPARISONS if a in present and b in present]
    return pairs + [(m, CHANCE) for m in models]


def write_report(
    evaluation: Evaluation,
    out_dir: Path | str,
    *,
    title: str = "UGBench results",
    notes: Sequence[str] = (),
    proxies: Mapping[str, str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Path:
    """
    Write ``results.parquet``, ``per_record.parquet``, ``comparisons.parquet``, one PNG chart per task and
    ``report.md`` into ``out_dir`` (every file atomically).

    Parameters
    ----------
    evaluation
        From :func:`~.evaluate.evaluate`.
    out_dir
        Directory (created).
    title
        Report heading.
    notes
        Extra lines for the notes section (e.g. how many seeds ``make run`` trains).
    proxies
        ``dimension -> what it stands in for`` of the perception task (the report says they are proxies).
    bootstrap, seed
        Cluster-bootstrap resamples and seed of the paired comparisons.

    Returns
    -------
    report
        Path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = evaluation.results
    models = list(dict.fromkeys(results.loc[results["kind"] == "model", "model"]))
    comparisons = compare(evaluation.per_record, standard_pairs(models), bootstrap=bootstrap, seed=seed)
    write_file_atomic(out / "results.parquet", frame_to_parquet_bytes(results))
    write_file_atomic(out / "per_record.parquet", frame_to_parquet_bytes(evaluation.per_record))
    write_file_atomic(out / "comparisons.parquet", frame_to_parquet_bytes(comparisons))
    seeds = results.loc[results["kind"] == "model"].groupby("model")["n_seeds"].max().to_dict()
    lines = [
        f"# {title}",
        "",
        f"Models (training seeds): {', '.join(f'{m} ({seeds[m]})' for m in models) or 'none'}; "
        f"records scored: {results_metadata(results)['records_scored']}.",
        "",
        "Each cell is the row's headline metric in percent (Hit@5 with 20 candidates; Hit@1 for perception, "
        "which has three): the mean over training seeds, `± SD` across seeds, and `[95 % interval]` from a "
        "bootstrap over ~250 m spatial blocks (the number of blocks is in brackets after n). `chance` is a "
        "random ranking of the same records; `best blind` the strongest scorer that never sees what the task "
        "tests (see *Blind scorers*).",
        "",
        "## Headline",
        "",
        results_table(results, role="headline", models=models),
        "",
        "## Paired comparisons",
        "",
        "Differences `a − b` in points on the same records, with a clustered 95 % interval; *no difference* "
        "where it spans zero. A gain over a model whose own interval includes chance is marked.",
        "",
        comparisons_table(comparisons[comparisons["role"] == "headline"]),
        "",
    ]
    for task in sorted(set(results["task"])):
        name = f"{task}.png"
        write_file_atomic(out / name, bar_chart_png(results, task=task))
        lines += [f"![{task}]({name})", ""]
    lines += [
        "## Graph reading",
        "",
        "Fusion rows whose query graph is the image's own subgraph, which holds the answer: a graph-only rule "
        "scores near 100 % here. They say whether a model reads its graph, not what it sees in the image.",
        "",
        results_table(results, role="graph_reading", models=models),
        "",
        comparisons_table(comparisons[comparisons["role"] == "graph_reading"]),
        "",
        "## Blind scorers",
        "",
        "A headline row whose blind scorer beats chance by more than 5 points (Hit@1 or Hit@5) fails the "
        "`benchmark_tasks` check.",
        "",
        blind_table(results),
        "",
    ]
    if proxies:
        lines += [
            "## Perception dimensions are proxies",
            "",
            "Levels are within-city terciles of measures taken from OpenStreetMap around the image (never the "
            "renderer's pixel fractions that training captions are written from), balanced per dimension:",
            "",
            *(f"- **{dim}**: {what}" for dim, what in proxies.items()),
            "",
        ]
    if evaluation.text_window:
        shares = ", ".join(f"{m}: {100 * v:.1f} %" for m, v in evaluation.text_window.items())
        lines += [
            "## Long texts",
            "",
            f"Share of texts longer than the text encoder's window ({shares}); they are "
            "encoded in consecutive windows and mean-pooled, not cut.",
            "",
        ]
    lines += [
        "## Notes",
        "",
        *(f"- {n}" for n in notes),
        "- Ties count at their expected rank under random tie-breaking, so constant scores give chance.",
        "- Geolocation and retrieval records come in groups of 20 that share their candidates, each member "
        "correct once, so candidate-only scorers are exactly at chance; fusion queries there carry the "
        "group's shared context graph, not the image's own.",
        "",
    ]
    report = out / "report.md"
    write_file_atomic(report, "\n".join(lines).encode("utf-8"))
    logger.info("wrote UGBench report with %s result rows to %s", len(results), report)
    return report
