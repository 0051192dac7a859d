"""UGE: spatially grounded embeddings (graph encoder, backbones, losses, trainer, embedding API).

Plain Python on tensors and DataFrames; never imports dagster. Modules:

- :mod:`.family` -- the model family (which models, from what, on what budget); no torch;
- :mod:`.backbone` -- the backbone interface every model implements and the backbone registry;
- :mod:`.graph_encoder` -- the GATv2 graph encoder over an image's spatial subgraph;
- :mod:`.losses` -- symmetric InfoNCE with in-batch (and cross-process) negatives;
- :mod:`.compact` -- the offline CPU backbone (bundled MiniLM text tower + small CNN image tower);
- :mod:`.data` -- training records to batches, subgraph tables to PyG graphs;
- :mod:`.images` -- decoded and prepared images, cached once per process;
- :mod:`.train` / :mod:`.loop` / :mod:`.checkpoint` -- the accelerate trainer (one run: inputs, resume, report), its
  loop around a training state (epochs, steps, validation, best and last checkpoints) and its checkpoints;
- :mod:`.runs` -- the family's training runs: inputs across cities, fingerprints and reuse, the current-run pointer;
- :mod:`.launch` -- training out of process (``accelerate launch`` through Dagster Pipes, without Dagster here);
- :mod:`.embed` -- batched, L2-normalised embeddings from a checkpoint (and a CLI).
"""

from __future__ import annotations
