"""Read Place Pulse 2.0 pairwise votes that a user supplies, and turn them into per-image scores.

Place Pulse 2.0 (Dubey et al., ECCV 2016) asked volunteers which of two street views looks safer, livelier, more
beautiful, wealthier, more depressing or more boring. Its images and votes are not redistributed with this project;
a user who has the data passes its ``votes.csv`` here. Expected columns (the public release's layout):

``left_id, right_id``  image ids of the pair
``winner``             ``left`` | ``right`` | ``equal``
``category``           one of :data:`PLACE_PULSE_DIMENSIONS`
``left_lat, left_long, right_lat, right_long``  optional, decimal degrees

**Scores** are the Q-scores of Salesses, Schechtner & Hidalgo (2013), per dimension. With ``n_i`` comparisons of
image ``i`` (ties included), win ratio ``W_i = wins_i / n_i`` and loss ratio ``L_i = losses_i / n_i``:

    Q_i = 10/3 * (W_i + mean(W_j for j beaten by i) - mean(L_j for j that beat i) + 1)

a mean over an empty set counting as 0, so ``Q`` lies in [0, 10]. :func:`place_pulse_levels` turns the scores into
terciles (low / mid / high) per dimension, like the proxy dimensions of :mod:`.perception`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ugdata_pipeline.errors import BenchmarkInputError
from ugdata_pipeline.tables import require_columns

logger = logging.getLogger(__name__)

PLACE_PULSE_DIMENSIONS: tuple[str, ...] = ("safety", "lively", "beautiful", "wealthy", "depressing", "boring")
_WINNERS = frozenset({"left", "right", "equal"})
SCORE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "dimension",
    "q_score",
    "wins",
    "losses",
    "ties",
    "n_comparisons",
    "lat",
    "lon",
)


def read_place_pulse_votes(source: Path | str | pd.DataFrame) -> pd.DataFrame:
    """
    Read and validate Place Pulse 2.0 votes.

    Parameters
    ----------
    source
        Path of ``votes.csv`` (or any CSV with the columns in the module docstring), or a DataFrame.

    Returns
    -------
    votes
        ``left_id``, ``right_id`` (str), ``winner``, ``category`` (lowercase) and, when present, the coordinates.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    BenchmarkInputError
        Missing columns, unknown winners or categories, or a vote comparing an image with itself.
    """
    if isinstance(source, pd.DataFrame):
        votes = source.copy()
    else:
        path = Path(source)
        if not path.is_file():
            msg = f"Place Pulse votes file {str(path)!r} does not exist; pass the votes.csv of Place Pulse 2.0"
            raise FileNotFoundError(msg)
        votes = pd.read_csv(path, dtype={"left_id": str, "right_id": str})
    require_columns(
        votes,
        ("left_id", "right_id", "winner", "category"),
        table="Place Pulse votes",
        fix="Expected left_id, right_id, winner (left|right|equal), category.",
        error=BenchmarkInputError,
    )
    votes["left_id"] = votes["left_id"].astype(str)
    votes["right_id"] = votes["right_id"].astype(str)
    votes["winner"] = votes["winner"].astype(str).str.strip().str.lower()
    votes["category"] = votes["category"].astype(str).str.strip().str.lower()
    bad = sorted(set(votes["winner"]) - _WINNERS)
    if bad:
        msg = f"Place Pulse votes hold unknown winner value(s) {bad[:5]}; allowed: {sorted(_WINNERS)}"
        raise BenchmarkInputError(msg)
    bad = sorted(set(votes["category"]) - set(PLACE_PULSE_DIMENSIONS))
    if bad:
        msg = f"Place Pulse votes hold unknown category value(s) {bad[:5]}; allowed: {list(PLACE_PULSE_DIMENSIONS)}"
        raise BenchmarkInputError(msg)
    self_votes = votes["left_id"] == votes["right_id"]
    if self_votes.any():
        msg = (
            f"{int(self_votes.sum())} Place Pulse vote(s) compare an image with itself, e.g. "
            f"{votes.loc[self_votes, 'left_id'].iloc[0]!r}; drop them"
        )
        raise BenchmarkInputError(msg)
    return votes.reset_index(drop=True)


def place_pulse_scores(votes: pd.DataFrame, *, min_comparisons: int = 1) -> pd.DataFrame:
    """
    Q-scores of every image on every dimension it was voted on (formula in the module docstring).

    Parameters
    ----------
    votes
        From :func:`read_place_pulse_votes`.
    min_comparisons
        Images with fewer comparisons on a dimension are left out of that dimension.

    Returns
    -------
    scores
        Columns :data:`SCORE_COLUMNS`, one row per (image, dimension); ``lat`` / ``lon`` NaN when not given.
    """
    frames = []
    for dimension, part in votes.groupby("category", sort=True):
        codes, ids = pd.factorize(pd.concat([part["left_id"], part["right_id"]], ignore_index=True))
        n_votes = len(part)
        left, right = codes[:n_votes], codes[n_votes:]
        winner = part["winner"].to_numpy(dtype=object)
        left_won, right_won = winner == "left", winner == "right"
        n_images = len(ids)
        wins = np.bincount(left[left_won], minlength=n_images) + np.bincount(right[right_won], minlength=n_images)
        losses = np.bincount(right[left_won], minlength=n_images) + np.bincount(left[right_won], minlength=n_images)
        total = np.bincount(left, minlength=n_images) + np.bincount(right, minlength=n_images)
        win_ratio = wins / total
        loss_ratio = losses / total
        # sums over opponents: W of those i beat, L of those who beat i
        n = n_images
        beaten_w = np.bincount(left[left_won], weights=win_ratio[right[left_won]], minlength=n) + np.bincount(
            right[right_won], weights=win_ratio[left[right_won]], minlength=n
        )
        beaten_by_l = np.bincount(right[left_won], weights=loss_ratio[left[left_won]], minlength=n) + np.bincount(
            left[right_won], weights=loss_ratio[right[right_won]], minlength=n
        )
        mean_beaten = np.divide(beaten_w, wins, out=np.zeros(n_images), where=wins > 0)
        mean_beaten_by = np.divide(beaten_by_l, losses, out=np.zeros(n_images), where=losses > 0)
        q_score = 10.0 / 3.0 * (win_ratio + mean_beaten - mean_beaten_by + 1.0)
        frame = pd.DataFrame(
            {
                "image_id": np.asarray(ids, dtype=object),
                "dimension": dimension,
                "q_score": q_score,
                "wins": wins,
                "losses": losses,
                "ties": total - wins - losses,
                "n_comparisons": total,
                "lat": np.nan,
                "lon": np.nan,
            }
        )
        if {"left_lat", "left_long", "right_lat", "right_long"} <= set(part.columns):
            coords = (
                pd.concat(
                    [
                        part[["left_id", "left_lat", "left_long"]].set_axis(["image_id", "lat", "lon"], axis=1),
                        part[["right_id", "right_lat", "right_long"]].set_axis(["image_id", "lat", "lon"], axis=1),
                    ]
                )
                .drop_duplicates("image_id")
                .set_index("image_id")
            )
            frame["lat"] = frame["image_id"].map(coords["lat"]).astype(float)
            frame["lon"] = frame["image_id"].map(coords["lon"]).astype(float)
        frames.append(frame[frame["n_comparisons"] >= min_comparisons])
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SCORE_COLUMNS))
    logger.info(
        "Place Pulse: %s scores over %s images and %s dimensions",
        f"{len(scores):,}",
        f"{scores['image_id'].nunique():,}",
        scores["dimension"].nunique(),
    )
    return scores[list(SCORE_COLUMNS)].reset_index(drop=True)


def load_place_pulse(source: Path | str | pd.DataFrame, *, min_comparisons: int = 1) -> pd.DataFrame:
    """Read Place Pulse 2.0 votes and return their Q-scores (:func:`read_place_pulse_votes` + scores)."""
    return place_pulse_scores(read_place_pulse_votes(source), min_comparisons=min_comparisons)


def place_pulse_levels(scores: pd.DataFrame) -> pd.DataFrame:
    """
    Add ``percentile`` (rank in (0, 1], average ranks for ties) and ``level`` (low | mid | high terciles) per dimension.
    """
    out = scores.copy()
    out["percentile"] = out.groupby("dimension")["q_score"].rank(pct=True, method="average")
    out["level"] = np.where(out["percentile"] <= 1 / 3, "low", np.where(out["percentile"] <= 2 / 3, "mid", "high"))
    return out
