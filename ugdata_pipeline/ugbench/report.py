"""UGBench reports: a paper-style Markdown table, PNG bar charts, a Markdown report and asset metadata."""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ugdata_pipeline.ugbench.evaluate import relative_gains

logger = logging.getLogger(__name__)

TABLE_METRICS: tuple[str, ...] = ("hit@1", "hit@5", "mrr")
_LABELS = {"hit@1": "H@1", "hit@3": "H@3", "hit@5": "H@5", "hit@10": "H@10", "mrr": "MRR", "mean_rank": "Rank"}


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if metric == "mean_rank" else f"{100 * value:.1f}"


def paper_table(
    results: pd.DataFrame, *, metrics: Sequence[str] = TABLE_METRICS, baseline: str | None = None
) -> str:
    """
    A paper-style Markdown table: one row per (task, type, city, split, mode), per model the chosen metrics.

    Hit@K and MRR are shown in percent, mean rank as is; the best model of each row and metric is in bold.
    With ``baseline``, the relative Hit@5 / first-metric gain of every other model is appended as ``(+12.3%)``.

    Returns
    -------
    table
        Markdown text (empty results give a one-line note).
    """
    if results.empty:
        return "_No results._\n"
    models = list(dict.fromkeys(results["model"]))
    keys = ["task", "query_type", "city", "split", "mode"]
    header = ["Task", "Type", "City", "Split", "Mode", "n"]
    for model in models:
        header += [f"{model} {_LABELS.get(m, m)}" for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 6 + ["---:"] * (len(header) - 6)) + "|"]
    gain_metric = "hit@5" if "hit@5" in metrics else metrics[0]
    for key, group in results.groupby(keys, sort=True):
        by_model = group.set_index("model")
        cells = [str(k) for k in key] + [str(int(group["n"].max()))]
        for model in models:
            for metric in metrics:
                if model not in by_model.index:
                    cells.append("–")
                    continue
                value = float(by_model.at[model, metric])
                column = by_model[metric].astype(float)
                best = column.min() if metric == "mean_rank" else column.max()
                text = _fmt(value, metric)
                if len(models) > 1 and math.isfinite(value) and math.isclose(value, best, rel_tol=0, abs_tol=1e-12):
                    text = f"**{text}**"
                if baseline and model != baseline and metric == gain_metric and baseline in by_model.index:
                    base = float(by_model.at[baseline, metric])
                    if base > 0:
                        text += f" ({100 * (value - base) / base:+.1f}%)"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart_png(results: pd.DataFrame, *, task: str, metric: str = "hit@5", dpi: int = 100) -> bytes:
    """
    PNG bar chart of one task: groups = (type, city, split, mode), one bar per model, 95 % interval whiskers.

    Returns
    -------
    png
        The image bytes (matplotlib's object API; no global pyplot state).
    """
    part = results[results["task"] == task]
    models = list(dict.fromkeys(part["model"]))
    part = part.assign(group=part["query_type"].where(part["query_type"] != task, "") + " " + part["city"] + "/"
                       + part["split"] + "/" + part["mode"])  # fmt: skip
    groups = sorted(part["group"].unique())
    fig = Figure(figsize=(max(4.0, 0.9 * len(groups) * max(1, len(models)) * 0.5 + 2), 3.6), dpi=dpi)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    x = np.arange(len(groups))
    for i, model in enumerate(models):
        rows = part[part["model"] == model].set_index("group").reindex(groups)
        value = rows[metric].to_numpy(dtype=float)
        lo = rows[f"{metric}_lo"].to_numpy(dtype=float)
        hi = rows[f"{metric}_hi"].to_numpy(dtype=float)
        err = np.vstack([np.nan_to_num(value - lo), np.nan_to_num(hi - value)])
        ax.bar(x + (i - (len(models) - 1) / 2) * width, value, width, yerr=err, capsize=2, label=model)
    ax.set_xticks(x, [g.strip() for g in groups], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(_LABELS.get(metric, metric))
    if metric != "mean_rank":
        ax.set_ylim(0, 1.05)
    ax.set_title(f"UGBench {task}: {_LABELS.get(metric, metric)} (95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def results_metadata(results: pd.DataFrame) -> dict[str, object]:
    """Figures for asset metadata: counts, models, and the best model's Hit@5 per task."""
    meta: dict[str, object] = {
        "rows": len(results),
        "models": sorted(set(results["model"])) if len(results) else [],
        "tasks": sorted(set(results["task"])) if len(results) else [],
        "cities": sorted(set(results["city"])) if len(results) else [],
        "records_scored": int(results.groupby(["task", "query_type", "city", "split", "mode"])["n"].max().sum())
        if len(results) else 0,
    }  # fmt: skip
    for task, group in results.groupby("task"):
        mean = group.groupby("model")["hit@5"].mean()
        meta[f"best_hit@5/{task}"] = f"{mean.idxmax()} {mean.max():.3f}"
    return meta


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_report(
    results: pd.DataFrame, out_dir: Path | str, *, baseline: str | None = None, metric: str = "hit@5",
    title: str = "UGBench results",
) -> Path:  # fmt: skip
    """
    Write ``results.parquet``, one PNG bar chart per task and ``report.md`` into ``out_dir``.

    Parameters
    ----------
    results
        From :func:`~.evaluate.evaluate` (any number of models).
    out_dir
        Directory (created); every file is written atomically.
    baseline
        Model to compute relative gains against; default ``"baseline"`` when present, else none.
    metric
        Metric of the bar charts.
    title
        Report heading.

    Returns
    -------
    report
        Path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if baseline is None and "baseline" in set(results["model"]):
        baseline = "baseline"
    buffer = io.BytesIO()
    results.to_parquet(buffer, index=False)
    _write_atomic(out / "results.parquet", buffer.getvalue())
    lines = [f"# {title}", ""]
    meta = results_metadata(results)
    lines += [f"Models: {', '.join(meta['models']) or 'none'}; records scored: {meta['records_scored']}; "  # type: ignore[arg-type]
              "Hit@K and MRR in percent, mean rank as is; intervals are bootstrap 95 % over records.", ""]  # fmt: skip
    lines += ["## Paper table", "", paper_table(results, baseline=baseline), ""]
    for task in sorted(set(results["task"])):
        name = f"{task}_{metric.replace('@', 'at')}.png"
        _write_atomic(out / name, bar_chart_png(results, task=task, metric=metric))
        lines += [f"## {task}", "", f"![{task} {metric}]({name})", ""]
        part = results[results["task"] == task]
        lines += ["| Type | City | Split | Mode | Model | n | " + " | ".join(
            f"{_LABELS[m]} [95% CI]" for m in ("hit@1", "hit@5", "hit@10", "mrr")) + " | Rank |",
                  "|---|---|---|---|---|---:|" + "---:|" * 5]  # fmt: skip
        for values in part.to_dict("records"):
            cells = []
            for m in ("hit@1", "hit@5", "hit@10", "mrr"):
                lo, hi = float(values[f"{m}_lo"]), float(values[f"{m}_hi"])
                cells.append(f"{_fmt(float(values[m]), m)} [{_fmt(lo, m)}, {_fmt(hi, m)}]")
            lines.append(f"| {values['query_type']} | {values['city']} | {values['split']} | {values['mode']} | "
                         f"{values['model']} | {values['n']} | " + " | ".join(cells)
                         + f" | {_fmt(float(values['mean_rank']), 'mean_rank')} |")  # fmt: skip
        lines.append("")
    if baseline is not None and len(set(results["model"])) > 1:
        gains = relative_gains(results, baseline=baseline)
        gains = gains[gains["metric"].isin(["hit@1", "hit@5", "mrr"])]
        lines += [f"## Relative gains over `{baseline}`", "", "| Task | Type | City | Split | Mode | Model | Metric | "
                  "Value | Baseline | Gain (pts) | Gain (%) |", "|---|---|---|---|---|---|---|---:|---:|---:|---:|"]
        for row in gains.itertuples(index=False):
            rel = "–" if not math.isfinite(row.rel_gain_pct) else f"{row.rel_gain_pct:+.1f}%"
            lines.append(f"| {row.task} | {row.query_type} | {row.city} | {row.split} | {row.mode} | {row.model} | "
                         f"{_LABELS[row.metric]} | {_fmt(row.value, row.metric)} | "
                         f"{_fmt(row.baseline_value, row.metric)} | {100 * row.abs_gain:+.1f} | {rel} |")  # fmt: skip
        lines.append("")
    lines += ["## Notes", "",
              "- Ties: a correct candidate tied with t others counts at its expected rank under random tie-breaking "
              "(Hit@K = P(rank <= K), MRR and mean rank likewise), so constant scores give chance.",
              "- Perception levels are proxies measured from the location (scene facts and OSM), not human judgements.",
              "- In fusion mode the query graph is the input the location description was rendered from; "
              "image / text modes are the headline geolocation and retrieval figures.", ""]  # fmt: skip
    report = out / "report.md"
    _write_atomic(report, "\n".join(lines).encode("utf-8"))
    logger.info("wrote UGBench report with %s result rows to %s", len(results), report)
    return report

