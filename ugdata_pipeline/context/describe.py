"""A subgraph as plain text for the captioning prompt: where the image is and what is around it.

The description says, in this order: the image's street and nearest crossing, the heading of the camera
(when the image row is given), an overview, the named places within ``near_m`` (nearest first, with
distance and compass direction from the image), how those places connect (``X is on Y Street``, ``A is
inside Central Park``, ``Central Park is bordered by ...``), and the streets around.

Wording lives in ``templates/subgraph_description.txt``; distances and directions come from the shared
:mod:`ugdata_pipeline.graph.text` helpers. The text is deterministic (every list is sorted by distance at
millimetre resolution, then by ``node_id``) and capped at ``max_chars``: whole lines are dropped, lowest
priority first (connections of the farthest places, the overview, the streets, the farthest places, ...),
so no line is ever cut mid-word.

Directions of places are from the image to the node's anchor (``dx_m``, ``dy_m``); distances are to the
nearest point of the node's geometry (``distance_m``), so an area the image stands in is "around the image".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import pandas as pd

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import SubgraphInputError, UnknownSubgraphError
from ugdata_pipeline.graph.text import compass_word, distance_phrase
from ugdata_pipeline.tables import require_columns

_TEMPLATE_FILE = "subgraph_description.txt"
_TEMPLATE_KEYS = (
    "location",
    "location_unknown",
    "crossing",
    "heading",
    "overview",
    "places_header",
    "place",
    "place_here",
    "no_places",
    "connections_header",
    "on_street",
    "inside_area",
    "bordered_by",
    "next_to",
    "streets",
    "street_here",
    "street_item",
)
_PLACE_KINDS = ("poi", "aoi")
_NODE_FIELDS = ("node_id", "kind", "name", "category", "dx_m", "dy_m", "distance_m")
_MAX_STREETS = 12  # streets named in the "Streets around" line
_INSIDE_M = 0.5  # an area this close (metres) is one the image stands in
_MIN_CHARS = 20

# line priorities: lower is kept longer; places and their connections add their position in the list
_PRIORITY_LOCATION, _PRIORITY_CROSSING, _PRIORITY_HEADING = 0, 1, 2
_PRIORITY_PLACE, _PRIORITY_STREETS, _PRIORITY_OVERVIEW, _PRIORITY_CONNECTION = 10, 40, 50, 60


@lru_cache(maxsize=1)
def description_templates() -> dict[str, str]:
    """
    The description templates, read once from the package's ``templates/subgraph_description.txt``.

    Raises
    ------
    SubgraphInputError
        The file lacks a template or has a line that is not ``name = text``.
    """
    text = files("ugdata_pipeline.context").joinpath("templates", _TEMPLATE_FILE).read_text(encoding="utf-8")
    templates: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, template = line.partition(" = ")
        if not sep:
            msg = f"templates/{_TEMPLATE_FILE} line {number} is not 'name = text': {line!r}"
            raise SubgraphInputError(msg)
        templates[name.strip()] = template
    missing = [k for k in _TEMPLATE_KEYS if k not in templates]
    if missing:
        msg = f"templates/{_TEMPLATE_FILE} lacks template(s) {missing}"
        raise SubgraphInputError(msg)
    return templates


@dataclass(frozen=True, slots=True)
class _Line:
    slot: int  # position in the text: 0 location, 1 crossing, 2 heading, 3 overview, 4 places, 5 links, 6 streets
    priority: int
    section: str  # "" for stand-alone lines, else the header template that introduces it
    text: str


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def described_names(nodes_df: pd.DataFrame) -> set[str]:
    """
    Every name in a subgraph (streets, crossings, places; not the image), for grounding checks of captions.

    Parameters
    ----------
    nodes_df
        The subgraph's node rows (``name``, and ``kind`` to leave the image out).
    """
    names: set[str] = set()
    for found in described_names_by_image(nodes_df.assign(image_id="")).values():
        names |= found
    return names


def described_names_by_image(subgraph_nodes: pd.DataFrame) -> dict[str, set[str]]:
    """``image_id`` -> :func:`described_names` of that image's rows, for the whole long table in one pass."""
    rows = subgraph_nodes if "kind" not in subgraph_nodes.columns else subgraph_nodes[subgraph_nodes["kind"] != "image"]
    rows = rows[rows["name"].notna()]
    out: dict[str, set[str]] = defaultdict(set)
    for image_id, name in zip(rows["image_id"].astype(str).tolist(), rows["name"].astype(str).tolist(), strict=True):
        name = name.strip()
        if name:
            out[image_id].add(name)
    return dict(out)


def _category(value: object) -> str:
    return "place" if _missing(value) else str(value).replace("_", " ")


def _join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _cut_at_word(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` characters at a word boundary, ending with an ellipsis."""
    if len(text) <= limit:
        return text
    head = text[: max(limit - 1, 0)]
    space = head.rfind(" ")
    return (head[:space].rstrip(" ,;:") + "…") if space > 0 else ""


def _render(lines: list[_Line], templates: Mapping[str, str], fields: Mapping[str, object]) -> str:
    out: list[str] = []
    shown: set[str] = set()
    for line in lines:
        if line.section and line.section not in shown:
            out.append(templates[line.section].format(**fields))
            shown.add(line.section)
        out.append(line.text)
    return "\n".join(out)


def describe_subgraph(
    nodes_df: pd.DataFrame,
    edges_df: pd.DataFrame,
    *,
    image_row: Mapping[str, object] | pd.Series | None = None,
    max_places: int = 10,
    near_m: float = 200.0,
    max_chars: int = 1500,
) -> str:
    """
    Describe one image's subgraph in plain text (see the module docstring).

    Parameters
    ----------
    nodes_df, edges_df
        The subgraph's rows (from :func:`~ugdata_pipeline.context.subgraph.subgraph_for`): nodes with
        ``node_id``, ``kind``, ``name``, ``category``, ``dx_m``, ``dy_m``, ``distance_m`` (metres) and
        ``rank`` (0 = the image); edges with ``src``, ``dst``, ``kind``.
    image_row
        The image's row of the anchored images table; its ``compass_angle`` (degrees clockwise from north)
        adds the camera heading, its ``street_node`` names the image's street.
    max_places
        How many places (POIs and areas, one per name and category) to list at most.
    near_m
        Places farther than this many metres from the image are not listed.
    max_chars
        Upper bound on the length of the text (at least 20).

    Returns
    -------
    text
        Lines separated by ``\\n``, at most ``max_chars`` characters.

    Raises
    ------
    SubgraphInputError
        Missing columns, no centre node, or an out-of-range option.
    """
    _check_options(max_places=max_places, near_m=near_m, max_chars=max_chars)
    fix = "Pass the rows of subgraph_for(tables, image_id)."
    require_columns(nodes_df, _NODE_FIELDS, table="describe_subgraph nodes", fix=fix, error=SubgraphInputError)
    require_columns(
        edges_df, ("src", "dst", "kind"), table="describe_subgraph edges", fix=fix, error=SubgraphInputError
    )
    columns = [*_NODE_FIELDS, *(c for c in ("rank", "lon", "lat") if c in nodes_df.columns)]
    records = [dict(zip(columns, row, strict=True)) for row in nodes_df[columns].itertuples(index=False, name=None)]
    edges = list(edges_df[["src", "dst", "kind"]].itertuples(index=False, name=None))
    return _describe(records, edges, image_row, max_places=max_places, near_m=near_m, max_chars=max_chars)


def _describe(
    records: list[dict[str, object]],
    edge_rows: list[tuple[object, object, object]],
    image_row: Mapping[str, object] | pd.Series | None,
    *,
    max_places: int,
    near_m: float,
    max_chars: int,
) -> str:
    """The description from plain records: a subgraph has a few hundred rows, where pandas' per-call cost
    would dominate."""
    templates = description_templates()
    for record in records:
        record["node_id"] = str(record["node_id"])
        record["name"] = None if _missing(record["name"]) else str(record["name"])
        record["_key"] = (round(float(record["distance_m"]) * 1000.0), record["node_id"])  # type: ignore[arg-type]
    if records and "rank" in records[0]:
        centers = [r for r in records if r["rank"] == 0]
    else:
        centers = [r for r in records if r["kind"] == "image"]
    if len(centers) != 1:
        msg = f"the subgraph must hold exactly one centre node (rank 0 / kind 'image'), found {len(centers)}"
        raise SubgraphInputError(msg)
    center = centers[0]
    others = sorted((r for r in records if r is not center), key=lambda r: r["_key"])  # type: ignore[arg-type,return-value]
    name_of = {str(r["node_id"]): r["name"] for r in records}
    links = _Links([(str(src), str(dst), str(kind)) for src, dst, kind in edge_rows], name_of)  # type: ignore[arg-type]

    lines: list[_Line] = []
    # --- where: street, nearest crossing, heading ------------------------------------------------------
    street_id = None
    if image_row is not None and not _missing(image_row.get("street_node")):
        street_id = str(image_row.get("street_node"))
    if street_id is None or street_id not in name_of:
        own = links.targets(center["node_id"], "image_street")
        street_id = own[0] if own else None
    street_name = None if street_id is None else name_of.get(street_id)
    if street_name is not None:
        lines.append(_Line(0, _PRIORITY_LOCATION, "", templates["location"].format(street=street_name)))
    else:
        lines.append(
            _Line(
                0,
                _PRIORITY_LOCATION,
                "",
                templates["location_unknown"].format(
                    lon=float(center.get("lon", math.nan)), lat=float(center.get("lat", math.nan))
                ),
            )
        )
    crossings = [r for r in others if r["kind"] == "crossing" and r["name"] is not None]
    on_street = set(links.sources(street_id, "crossing")) if street_id is not None else set()
    crossings = [r for r in crossings if r["node_id"] in on_street] or crossings
    if crossings:
        crossing = crossings[0]
        lines.append(
            _Line(
                1,
                _PRIORITY_CROSSING,
                "",
                templates["crossing"].format(
                    crossing=crossing["name"],
                    distance=distance_phrase(float(crossing["distance_m"])),
                    direction=compass_word(_bearing(crossing["dx_m"], crossing["dy_m"])),
                ),
            )
        )
    heading = None if image_row is None else image_row.get("compass_angle")
    if not _missing(heading) and math.isfinite(float(heading)):  # type: ignore[arg-type]
        facing = templates["heading"].format(direction=compass_word(float(heading)))  # type: ignore[arg-type]
        lines.append(_Line(2, _PRIORITY_HEADING, "", facing))

    # --- what: places within near_m, nearest first, one per (name, category) --------------------------------
    all_places = [r for r in others if r["kind"] in _PLACE_KINDS and r["name"] is not None]
    places: list[dict[str, object]] = []
    seen: set[tuple[object, object]] = set()
    for place in all_places:
        key = (place["name"], _category(place["category"]))
        if float(place["distance_m"]) <= near_m and key not in seen and len(places) < max_places:
            seen.add(key)
            places.append(place)
    near = distance_phrase(float(near_m))
    n_streets = sum(r["kind"] == "street" for r in others)
    n_crossings = sum(r["kind"] == "crossing" for r in others)
    lines.append(
        _Line(
            3,
            _PRIORITY_OVERVIEW,
            "",
            templates["overview"].format(n_streets=n_streets, n_crossings=n_crossings, n_places=len(all_places)),
        )
    )
    if not places:
        lines.append(_Line(4, _PRIORITY_PLACE, "", templates["no_places"].format(near=near)))
    for i, place in enumerate(places):
        name, category = place["name"], _category(place["category"])
        if float(place["distance_m"]) < _INSIDE_M and place["kind"] == "aoi":
            text = templates["place_here"].format(name=name, category=category)
        else:
            direction = compass_word(_bearing(place["dx_m"], place["dy_m"]))
            text = templates["place"].format(
                name=name, category=category, direction=direction, distance=distance_phrase(float(place["distance_m"]))
            )
        lines.append(_Line(4, _PRIORITY_PLACE + i, "places_header", text))
        for text in _connections(place, links, templates):
            lines.append(_Line(5, _PRIORITY_CONNECTION + i, "connections_header", text))

    # --- the streets around --------------------------------------------------------------------------
    items = [templates["street_here"].format(name=street_name)] if street_name is not None else []
    named_streets: set[object] = {street_name}
    for street in others:
        if street["kind"] != "street" or street["name"] is None or street["name"] in named_streets:
            continue
        if len(items) >= _MAX_STREETS:
            break
        named_streets.add(street["name"])
        distance = distance_phrase(float(street["distance_m"]))
        items.append(templates["street_item"].format(name=street["name"], distance=distance))
    if items:
        lines.append(_Line(6, _PRIORITY_STREETS, "", templates["streets"].format(streets=", ".join(items))))

    # text order by slot, then cap by dropping the lowest-priority lines (the last of equals first)
    lines.sort(key=lambda line: (line.slot, line.priority))
    fields = {"near": near}
    text = _render(lines, templates, fields)
    while len(text) > max_chars and len(lines) > 1:
        drop = max(range(len(lines)), key=lambda k: (lines[k].priority, k))
        del lines[drop]
        text = _render(lines, templates, fields)
    return _cut_at_word(text, max_chars)


def _check_options(*, max_places: int, near_m: float, max_chars: int) -> None:
    if not isinstance(max_chars, int) or max_chars < _MIN_CHARS:
        msg = f"max_chars must be an int >= {_MIN_CHARS}, got {max_chars!r}"
        raise SubgraphInputError(msg)
    if not isinstance(max_places, int) or max_places < 0:
        msg = f"max_places must be an int >= 0, got {max_places!r}"
        raise SubgraphInputError(msg)
    if not isinstance(near_m, int | float) or not math.isfinite(near_m) or near_m <= 0:
        msg = f"near_m must be a finite distance > 0 in metres, got {near_m!r}"
        raise SubgraphInputError(msg)


def _bearing(dx_m: object, dy_m: object) -> float:
    """Degrees clockwise from north, from the image to a node's anchor ``dx_m`` east and ``dy_m`` north of it."""
    return math.degrees(math.atan2(float(dx_m), float(dy_m)))  # type: ignore[arg-type]


class _Links:
    """The subgraph's edges indexed by (source, kind) and (target, kind)."""

    def __init__(self, edges: list[tuple[str, str, str]], name_of: Mapping[str, str | None]) -> None:
        self._out: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._in: dict[tuple[str, str], list[str]] = defaultdict(list)
        for src, dst, kind in edges:
            self._out[(src, kind)].append(dst)
            self._in[(dst, kind)].append(src)
        self._name_of = name_of

    def targets(self, node_id: str, kind: str) -> list[str]:
        return sorted(self._out.get((node_id, kind), []))

    def sources(self, node_id: str, kind: str) -> list[str]:
        return sorted(self._in.get((node_id, kind), []))

    def names(self, node_ids: list[str]) -> list[str]:
        """Sorted distinct names of the nodes, skipping unnamed ones."""
        return sorted({name for i in node_ids if (name := self._name_of.get(i)) is not None})


def _connections(place: Mapping[str, object], links: _Links, templates: Mapping[str, str]) -> list[str]:
    """Connection lines of one place: its street, the area it is inside, the streets bordering it."""
    node_id, name, kind = str(place["node_id"]), place["name"], place["kind"]
    out = []
    nearest = links.names(links.targets(node_id, "nearest"))
    bordering = links.names(links.sources(node_id, "bounds"))
    if kind == "poi" and nearest:
        out.append(templates["on_street"].format(name=name, street=_join_names(nearest)))
    for area in links.names(links.targets(node_id, "within")):
        out.append(templates["inside_area"].format(name=name, area=area))
    if kind == "aoi" and bordering:
        out.append(templates["bordered_by"].format(name=name, streets=_join_names(bordering)))
    elif kind == "aoi" and nearest:
        out.append(templates["next_to"].format(name=name, street=_join_names(nearest)))
    return out


def describe_subgraphs(
    tables: SubgraphTables,
    images: pd.DataFrame | None = None,
    *,
    max_places: int = 10,
    near_m: float = 200.0,
    max_chars: int = 1500,
) -> pd.DataFrame:
    """
    Describe every subgraph of ``tables`` in one pass (same text as :func:`describe_subgraph`, much faster
    than calling it per image: the long tables are split once, with no per-image pandas work).

    Parameters
    ----------
    tables
        The subgraph tables (``summary`` may be None or empty when rebuilt from stored ``nodes`` / ``edges``);
        each image's node rows are read by ``rank`` (:class:`~ugdata_pipeline.context.subgraph_tables.SubgraphIndex`).
    images
        The anchored images table; when given, its rows set the order and supply ``compass_angle`` /
        ``street_node`` per image, and every ``image_id`` must have a subgraph. When omitted, every image of
        ``tables.nodes`` is described in first-appearance order, without headings.
    max_places, near_m, max_chars
        As for :func:`describe_subgraph`.

    Returns
    -------
    descriptions
        Columns ``image_id``, ``description``.

    Raises
    ------
    SubgraphInputError
        A bad option or missing columns.
    UnknownSubgraphError
        An image of ``images`` without a subgraph.
    """
    _check_options(max_places=max_places, near_m=near_m, max_chars=max_chars)
    nodes, edges = tables.nodes, tables.edges
    fix = "Pass the tables from build_subgraphs."
    node_columns, edge_columns = ("image_id", *_NODE_FIELDS), ("image_id", "src", "dst", "kind")
    require_columns(nodes, node_columns, table="describe_subgraphs nodes", fix=fix, error=SubgraphInputError)
    require_columns(edges, edge_columns, table="describe_subgraphs edges", fix=fix, error=SubgraphInputError)
    columns = [*_NODE_FIELDS, *(c for c in ("rank", "lon", "lat") if c in nodes.columns)]
    index = tables.index  # one image's rows are one slice of index.nodes / index.edges
    node_values = {c: index.nodes[c].to_numpy(dtype=object) for c in columns}
    edge_values = [index.edges[c].to_numpy(dtype=object) for c in ("src", "dst", "kind")]
    if images is None:
        wanted = [(str(image_id), None) for image_id in pd.unique(nodes["image_id"].astype(str))]
    else:
        wanted = [(str(row["image_id"]), row) for row in images.to_dict("records")]
    out = []
    for image_id, image_row in wanted:
        if image_id not in index:
            msg = (
                f"no subgraph for image_id {image_id!r} ({len(index):,} subgraphs held); build subgraphs "
                "for the same images table"
            )
            raise UnknownSubgraphError(msg)
        rows = slice(*index.node_rows(image_id))
        picked = [node_values[c][rows].tolist() for c in columns]
        records = [dict(zip(columns, values, strict=True)) for values in zip(*picked, strict=True)]
        erows = slice(*index.edge_rows(image_id))
        edge_rows = list(zip(*(values[erows].tolist() for values in edge_values), strict=True))
        out.append(_describe(records, edge_rows, image_row, max_places=max_places, near_m=near_m, max_chars=max_chars))
    return pd.DataFrame(
        {"image_id": pd.Series([w[0] for w in wanted], dtype=object), "description": pd.Series(out, dtype=object)}
    )
