"""``python -m unimedvl.train``: the training entry point (:func:`unimedvl.train.entry.main`; its usage:
``python -m unimedvl.train --help``). ``unimedvl train`` is the same command (:mod:`unimedvl.commands.train`)."""

import sys

from unimedvl.train.entry import main

if __name__ == "__main__":
    sys.exit(main())
