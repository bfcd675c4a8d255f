"""Training layer (imports the library; the library never imports this package).

``Trainer`` (trainer.py) runs one training run from a ``TrainConfig`` (config.py); distribution
lives in parallel.py, checkpoints in checkpointing.py, image-space losses in losses.py.
Entry points: ``python -m unimedvl.train`` / ``torchrun -m unimedvl.train`` and ``unimedvl train``.
"""
