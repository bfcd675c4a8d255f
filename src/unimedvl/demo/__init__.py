"""``unimedvl demo``: the main job end to end on built-in data (an application of the library).

- :mod:`.pipeline`: the stages (data, tokenizer, autoencoder, model init, train, eval, report) and
  the command;
- :mod:`.baselines`: every metric of the evaluation next to the baseline it must beat, and the goals.
"""

from unimedvl.demo.pipeline import Demo, DemoConfig

__all__ = ["Demo", "DemoConfig"]
