"""Training layer (imports the library; the library never imports this package).

``Trainer`` (trainer.py) runs one training run from a ``TrainConfig`` (config.py); distribution
lives in parallel.py, checkpoints in checkpointing.py, image-space losses and SSIM in losses.py;
autoencoder.py trains a small FLUX-layout VAE (``unimedvl train-autoencoder``).
Entry points: ``python -m unimedvl.train`` / ``torchrun -m unimedvl.train`` and ``unimedvl train``.
"""
