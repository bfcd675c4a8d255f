"""``unimedvl demo``: the main job end to end on built-in data (an application of the library).

- :mod:`.pipeline`: the stages (data, tokenizer, autoencoder, model init, train, eval, report) and
  the command;
- :mod:`.goals`: what the demo hopes for, checked against the evaluation's own baselines.
"""

from unimedvl.demo.pipeline import Demo, DemoConfig

__all__ = ["Demo", "DemoConfig"]
