"""The flags of ``jobs/encode.py`` (``EncodeConfig``), apart from the encoding stage
(``pipeline.encode_stage``) so that ``--help`` loads no model library."""

from __future__ import annotations

import dataclasses

from pipeline.cli import check_minimums, option


@dataclasses.dataclass
class EncodeConfig:
    """Flags of ``jobs/encode.py``."""
    # Fields that are paths or URIs (pipeline.submission: what a submitted job may be given).
    LOCATIONS = {"data": "input", "model": "input", "output": "output", "captions": "input"}

    data: str = option(help="orbit shards from jobs/render.py (folder or URI)")
    model: str = option(help="G whose VAE and text encoder encode: the model fine-tuning will start from")
    output: str = option(help="folder or URI for the latent shards (must hold none yet)")
    resolution: int = option(256, "G's training resolution: the views are resized to it before encoding",
                             minimum=8)
    captions: str | None = option(None, "CSV uid or file name,caption overriding the shards' captions")
    num_gpus_per_actor: float = option(0.0, "GPUs per encode actor (1 on a GPU cluster; 0: CPU actors)", minimum=0.0)
    num_cpus_per_actor: float = option(1.0, "CPUs per encode actor", exclusive_minimum=0.0)
    max_actors: int = option(1, "encode actors the pool may scale up to (one per GPU on a GPU cluster)", minimum=1)
    batch_size: int = option(4, "orbits per encode call", minimum=1)
    rows_per_file: int = option(256, "latent rows per output file at most", minimum=1)

    def __post_init__(self) -> None:
        check_minimums(self)
