"""PyTorch Geometric, imported once and quietly: the names the project uses from it.

torch_geometric calls ``torch.jit.script`` while importing, which torch >= 2.10 flags with a FutureWarning (and a
DeprecationWarning on some versions). The warning is theirs, not ours, and the test suite turns warnings into
errors, so the import is done here, with exactly those messages silenced; every module takes PyG's names from here.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import GATv2Conv, GCNConv
    from torch_geometric.utils import scatter, softmax

__all__ = ["Batch", "Data", "GATv2Conv", "GCNConv", "scatter", "softmax"]
