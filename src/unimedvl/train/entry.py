"""The training entry point: ``python -m unimedvl.train`` (:func:`main`) and ``unimedvl train``
(:mod:`unimedvl.commands.train`) both end in :func:`run_training`.

:data:`USAGE` is what both print as their description.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from unimedvl.errors import UserError
from unimedvl.train.config import add_arguments, config_from_args
from unimedvl.train.stop_request import EXIT_STATUS

USAGE = """Train the unified model: ``torchrun --nproc_per_node=N -m unimedvl.train ...`` or ``unimedvl train ...``.

Flags are TrainConfig's fields (``python -m unimedvl.train --help``); ``--config RUN.yaml`` holds
the same keys and flags override it. One process needs no torchrun:

    python -m unimedvl.train --config configs/train/sft_generic.yaml --model_path ckpt/debug \\
        --dataset_config_file data/mix.yaml --dataset_info_file data/dataset_info.yaml

One node, 8 GPUs:

    torchrun --standalone --nproc_per_node=8 -m unimedvl.train --config configs/train/sft_generic.yaml \\
        --model_path /models/UniMedVL --checkpoint_dir results/sft

Several nodes (run the same command on every node; NODE_RANK 0..NNODES-1, MASTER_ADDR = the
address of node 0, reachable from all nodes; HYBRID_SHARD shards inside a node and replicates
across nodes):

    torchrun --nnodes=$NNODES --node_rank=$NODE_RANK --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:29500 --rdzv_id=unimedvl_sft \\
        -m unimedvl.train --config configs/train/sft_generic.yaml \\
        --sharding_strategy HYBRID_SHARD --num_shard 8 --num_replicate $NNODES \\
        --model_path /shared/models/UniMedVL --checkpoint_dir /shared/results/sft --auto_resume True

``checkpoint_dir`` must be on storage every node sees (checkpoints are written by all ranks).
"""


def run_training(args: argparse.Namespace | dict) -> int:
    """Build the TrainConfig from parsed flags (or their dict), train, clean up; the exit status."""
    from unimedvl.distributed import dist_env, stop_distributed
    from unimedvl.train.trainer import Trainer

    rank = dist_env().rank
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = config_from_args(args)
        trainer = Trainer(cfg)
        trainer.train()
    finally:
        stop_distributed()
    return EXIT_STATUS if trainer.stopped else 0  # 143 after a SIGTERM, as if the signal had ended it


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unimedvl.train ARGS``: parse the TrainConfig flags and train; a UserError is one line
    on rank 0's stderr and exit status 2."""
    from unimedvl.threads import WAIT_POLICY

    for key, value in WAIT_POLICY.items():  # under torchrun too: passive OpenMP waiting (unimedvl/threads.py)
        os.environ.setdefault(key, value)
    # No abbreviations: with two spellings per flag (--model_path, --model-path) every prefix is ambiguous.
    parser = argparse.ArgumentParser(
        prog="python -m unimedvl.train",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_training(args)
    except UserError as err:
        from unimedvl.train.parallel import dist_env

        if dist_env().rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return 2
