"""UGE: spatially grounded embeddings (graph encoder, backbones, losses, trainer, embedding API).

Plain Python on tensors and DataFrames; never imports dagster. Modules:

- :mod:`.backbone` -- the backbone interface every model implements and the backbone registry;
- :mod:`.graph_encoder` -- the GATv2 graph encoder over an image's spatial subgraph;
- :mod:`.losses` -- symmetric InfoNCE with in-batch (and cross-process) negatives;
- :mod:`.compact` -- the offline CPU backbone (bundled MiniLM text tower + small CNN image tower);
- :mod:`.data` -- training records to batches, subgraph tables to PyG graphs;
- :mod:`.train` / :mod:`.checkpoint` -- the accelerate trainer and its checkpoints;
- :mod:`.embed` -- batched, L2-normalised embeddings from a checkpoint (and a CLI).
"""

from __future__ import annotations

import warnings


def _import_pyg_quietly() -> None:
    # torch_geometric calls torch.jit.script at import time, which torch >= 2.10 flags with a FutureWarning.
    # The test suite turns warnings into errors, so the one import that emits it is silenced here, narrowly
    # (that message, that category), before any submodule imports torch_geometric.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        import torch_geometric
        import torch_geometric.nn  # noqa: F401


_import_pyg_quietly()
