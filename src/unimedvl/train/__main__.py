"""Train the unified model: ``torchrun --nproc_per_node=N -m unimedvl.train ...`` or ``unimedvl train ...``.

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

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from unimedvl.errors import UserError
from unimedvl.train.config import add_arguments, config_from_args
from unimedvl.train.stop_request import EXIT_STATUS

HELP = "train the unified model (one process, or under torchrun with FSDP2)"


def run(args: argparse.Namespace) -> int:
    """Entry of ``unimedvl train`` and ``python -m unimedvl.train``: build, train, clean up."""
    from unimedvl.distributed import dist_env, stop_distributed
    from unimedvl.train.trainer import Trainer

    rank = dist_env().rank
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        cfg = config_from_args(args)
        trainer = Trainer(cfg)
        trainer.train()
    finally:
        stop_distributed()
    return EXIT_STATUS if trainer.stopped else 0  # 143 after a SIGTERM, as if the signal had ended it


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to the ``unimedvl`` command line."""
    # No abbreviations: with two spellings per flag (--model_path, --model-path) every prefix is ambiguous.
    parser = subparsers.add_parser("train", help=HELP, description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m unimedvl.train``; the exit status."""
    from unimedvl.threads import WAIT_POLICY

    for key, value in WAIT_POLICY.items():  # under torchrun too: passive OpenMP waiting (unimedvl/threads.py)
        os.environ.setdefault(key, value)
    parser = argparse.ArgumentParser(prog="python -m unimedvl.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        from unimedvl.train.parallel import dist_env

        if dist_env().rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
