"""The graph encoder: a GATv2 network over an image's spatial subgraph, read out to one vector per image.

Input is a PyG ``Data``/``Batch`` built by :func:`ugdata_pipeline.uge.data.build_graphs` with these attributes:

- ``x_text`` ``[N, node_text_dim]``: frozen node-text embeddings (zeros for the image centre node);
- ``node_kind`` ``[N]`` int64: index into :data:`ugdata_pipeline.graph.schema.NODE_KINDS`;
- ``pos_m`` ``[N, 2]``: the node's offset from the image, east and north, in metres;
- ``edge_index`` ``[2, E]``: every undirected edge in BOTH directions (so messages flow both ways);
- ``edge_attr`` ``[E, 5]``: :data:`EDGE_FEATURE_NAMES` per directed edge;
- ``center_mask`` ``[N]`` bool: exactly one True per graph, the image's own node;
- ``batch`` ``[N]``: graph index per node (set by ``Batch.from_data_list``).

Node input = projected text ⊕ node-kind embedding ⊕ a multi-scale sinusoidal encoding of the offset (translation
invariant, so it transfers across cities), summed and normalised. Edge features go through an MLP to ``edge_dim``.
``num_layers`` GATv2 layers (``heads`` heads of ``hidden_dim / heads`` channels, concatenated) run with residuals
and LayerNorm; the readout is the centre node's vector concatenated with an attention pooling over all nodes of the
same graph, projected to ``out_dim``.
Ablations: ``use_edge_features=False``, ``use_coord_encoding=False``, ``conv="gcn"``, ``edge_dim`` 8/16/32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from ugdata_pipeline._pyg import GATv2Conv, GCNConv, scatter, softmax
from ugdata_pipeline.graph.schema import NODE_KINDS

ConvKind = Literal["gatv2", "gcn"]
CONV_KINDS: tuple[str, ...] = get_args(ConvKind)

#: Raw per-directed-edge features, in this order (see ``ugdata_pipeline.uge.data.edge_features``).
EDGE_FEATURE_NAMES: tuple[str, ...] = ("log1p_distance_m", "bearing_sin", "bearing_cos", "dx_km", "dy_km")
EDGE_FEATURE_DIM = len(EDGE_FEATURE_NAMES)

__all__ = [
    "CONV_KINDS",
    "EDGE_FEATURE_DIM",
    "EDGE_FEATURE_NAMES",
    "GraphEncoder",
    "GraphEncoderConfig",
    "sinusoidal_offset_encoding",
]


@dataclass(frozen=True, slots=True)
class GraphEncoderConfig:
    """Hyper-parameters of :class:`GraphEncoder` (all saved with every checkpoint)."""

    node_text_dim: int = 384  # width of the frozen node-text embeddings (MiniLM: 384)
    hidden_dim: int = 128  # GNN width (256 made a CPU stage-2 step 3x slower for no measured gain)
    out_dim: int = 256  # graph vector width (the backbone's embedding width)
    edge_dim: int = 16  # width of the edge-feature MLP output fed to GATv2 (ablation: 8/16/32)
    num_layers: int = 2  # message-passing layers
    heads: int = 4  # GATv2 attention heads
    # Heads of hidden_dim / heads channels, concatenated (the usual multi-head layout): on a CPU batch of 64
    # subgraphs a layer pair runs 6.5x faster than heads of hidden_dim channels averaged (0.09 vs 0.61 s forward +
    # backward), which is what checkpoints saved before this field used.
    concat_heads: bool = True
    conv: ConvKind = "gatv2"  # "gatv2" or the "gcn" ablation (GCN ignores edge features)
    use_edge_features: bool = True  # ablation switch: GATv2 without edge_attr
    use_coord_encoding: bool = True  # ablation switch: no sinusoidal offset encoding
    coord_frequencies: int = 16  # sinusoidal bands per axis
    min_wavelength_m: float = 4.0  # shortest band, metres
    max_wavelength_m: float = 4000.0  # longest band, metres (> twice the subgraph radius)
    dropout: float = 0.1  # dropout on node inputs, messages and GATv2 attention

    def __post_init__(self) -> None:
        if self.conv not in CONV_KINDS:
            msg = f"GraphEncoderConfig.conv must be one of {CONV_KINDS}, got {self.conv!r}."
            raise ValueError(msg)
        for name in ("node_text_dim", "hidden_dim", "out_dim", "edge_dim", "num_layers", "heads", "coord_frequencies"):
            if int(getattr(self, name)) < 1:
                msg = f"GraphEncoderConfig.{name} must be >= 1, got {getattr(self, name)!r}."
                raise ValueError(msg)
        if self.concat_heads and self.hidden_dim % self.heads:
            msg = (
                f"GraphEncoderConfig.hidden_dim ({self.hidden_dim}) must be a multiple of heads ({self.heads}) when "
                "heads are concatenated; change one of them or set concat_heads=False."
            )
            raise ValueError(msg)
        if not 0 < self.min_wavelength_m < self.max_wavelength_m:
            msg = (
                f"GraphEncoderConfig needs 0 < min_wavelength_m < max_wavelength_m, got {self.min_wavelength_m!r} "
                f"and {self.max_wavelength_m!r}."
            )
            raise ValueError(msg)
        if not 0 <= self.dropout < 1:
            msg = f"GraphEncoderConfig.dropout must be in [0, 1), got {self.dropout!r}."
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphEncoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they signal a config from another version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"unknown GraphEncoderConfig keys {unknown}; known keys are {sorted(known)}."
            raise ValueError(msg)
        return cls(**data)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> GraphEncoderConfig:
        """A checkpoint's full saved config; one saved before ``concat_heads`` existed averaged its heads."""
        return cls.from_dict({"concat_heads": False, **data})


def sinusoidal_offset_encoding(
    pos_m: Tensor, *, frequencies: int = 16, min_wavelength_m: float = 4.0, max_wavelength_m: float = 4000.0
) -> Tensor:
    """
    Multi-scale sinusoidal encoding of east/north offsets in metres.

    Wavelengths run geometrically from ``min_wavelength_m`` to ``max_wavelength_m``; each axis contributes
    ``sin(2π x / λ_k)`` and ``cos(2π x / λ_k)``. Offsets are relative to the image, so the encoding is translation
    invariant across cities (the reference fed raw degrees, with bands below float32 resolution: notes §1.3).

    Parameters
    ----------
    pos_m
        ``[N, 2]`` east and north offsets in metres.

    Returns
    -------
    encoding
        ``[N, 4 * frequencies]`` in [-1, 1], ordered (axis, band, sin/cos).
    """
    k = torch.arange(frequencies, dtype=torch.float32, device=pos_m.device)
    ratio = math.log(max_wavelength_m / min_wavelength_m) / max(frequencies - 1, 1)
    wavelengths = min_wavelength_m * torch.exp(k * ratio)
    angles = pos_m.float()[:, :, None] * (2 * math.pi / wavelengths)  # [N, 2, F]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(pos_m.shape[0], -1)


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class GraphEncoder(nn.Module):
    """
    GATv2 over a batch of subgraphs; one vector per graph (centre node ⊕ attention pooling).

    Parameters
    ----------
    config
        :class:`GraphEncoderConfig`.

    Shapes
    ------
    forward: PyG ``Batch`` with G graphs and N nodes -> ``[G, out_dim]``.
    """

    def __init__(self, config: GraphEncoderConfig) -> None:
        super().__init__()
        self.config = config
        hid = config.hidden_dim
        self.text_proj = nn.Linear(config.node_text_dim, hid)
        self.kind_embedding = nn.Embedding(len(NODE_KINDS), hid)
        self.coord_proj = (
            _mlp(4 * config.coord_frequencies, hid, hid, config.dropout) if config.use_coord_encoding else None
        )
        self.input_norm = nn.LayerNorm(hid)
        self.input_dropout = nn.Dropout(config.dropout)
        use_edges = config.use_edge_features and config.conv == "gatv2"
        self.edge_mlp = _mlp(EDGE_FEATURE_DIM, config.edge_dim, config.edge_dim, config.dropout) if use_edges else None
        self.convs = nn.ModuleList()
        for _ in range(config.num_layers):
            if config.conv == "gatv2":
                conv: nn.Module = GATv2Conv(
                    hid,
                    hid // config.heads if config.concat_heads else hid,
                    heads=config.heads,
                    concat=config.concat_heads,
                    dropout=config.dropout,
                    edge_dim=config.edge_dim if use_edges else None,
                    add_self_loops=True,
                    fill_value="mean",
                )
            else:
                conv = GCNConv(hid, hid, add_self_loops=True, normalize=True)
            self.convs.append(conv)
        self.norms = nn.ModuleList(nn.LayerNorm(hid) for _ in range(config.num_layers))
        self.message_dropout = nn.Dropout(config.dropout)
        # no bias on the score: softmax ignores a shared shift, so that bias would never get a gradient
        self.pool_gate = nn.Sequential(nn.Linear(hid, hid), nn.Tanh(), nn.Linear(hid, 1, bias=False))
        self.pool_value = nn.Linear(hid, hid)
        self.out_proj = nn.Sequential(nn.Linear(2 * hid, hid), nn.GELU(), nn.Linear(hid, config.out_dim))

    @staticmethod
    def _batch_vector(graph: Any) -> tuple[Tensor, int]:
        num_nodes = graph.x_text.shape[0]
        batch = getattr(graph, "batch", None)
        if batch is None:
            return torch.zeros(num_nodes, dtype=torch.long, device=graph.x_text.device), 1
        return batch, int(graph.num_graphs)

    def node_inputs(self, graph: Any) -> Tensor:
        """Initial node states ``[N, hidden_dim]``: text + kind (+ offset encoding), normalised."""
        x = self.text_proj(graph.x_text.float()) + self.kind_embedding(graph.node_kind)
        if self.coord_proj is not None:
            cfg = self.config
            pe = sinusoidal_offset_encoding(
                graph.pos_m,
                frequencies=cfg.coord_frequencies,
                min_wavelength_m=cfg.min_wavelength_m,
                max_wavelength_m=cfg.max_wavelength_m,
            )
            x = x + self.coord_proj(pe)
        return self.input_dropout(self.input_norm(x))

    def encode_nodes(self, graph: Any) -> Tensor:
        """
        Node states after message passing.

        Returns
        -------
        nodes
            ``[N, hidden_dim]``, aligned with the nodes of ``graph``.
        """
        x = self.node_inputs(graph)
        edge_attr = self.edge_mlp(graph.edge_attr.float()) if self.edge_mlp is not None else None
        for conv, norm in zip(self.convs, self.norms, strict=True):
            if self.config.conv == "gatv2":
                message = (
                    conv(x, graph.edge_index, edge_attr=edge_attr)
                    if edge_attr is not None
                    else conv(x, graph.edge_index)
                )
            else:
                message = conv(x, graph.edge_index)
            x = norm(x + self.message_dropout(torch.nn.functional.gelu(message)))
        return x

    def forward(self, graph: Any) -> Tensor:
        """
        Encode a batch of subgraphs.

        Parameters
        ----------
        graph
            PyG ``Data`` (one graph) or ``Batch`` with the attributes listed in the module docstring.

        Returns
        -------
        vectors
            ``[G, out_dim]``, row g belongs to graph g of the batch (not L2-normalised).
        """
        batch, num_graphs = self._batch_vector(graph)
        nodes = self.encode_nodes(graph)
        center_mask = graph.center_mask.bool()
        centers_per_graph = scatter(center_mask.long(), batch, dim=0, dim_size=num_graphs, reduce="sum")
        if not bool((centers_per_graph == 1).all()):
            msg = (
                f"every graph needs exactly one centre node (center_mask), got counts {centers_per_graph.tolist()}; "
                "build graphs with ugdata_pipeline.uge.data.build_graphs."
            )
            raise ValueError(msg)
        # centre rows come out in node order, which is graph order because Batch concatenates graphs in order
        center = nodes[center_mask]
        gate = softmax(self.pool_gate(nodes), batch, num_nodes=nodes.shape[0], dim=0)
        pooled = scatter(gate * self.pool_value(nodes), batch, dim=0, dim_size=num_graphs, reduce="sum")
        return self.out_proj(torch.cat([center, pooled], dim=-1))
