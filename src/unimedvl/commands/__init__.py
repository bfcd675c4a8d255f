"""The ``unimedvl`` subcommands: argument parsers, option wiring and terminal output, one module per
command (the library they call lives in the packages below; this package is imported only by
:mod:`unimedvl.cli`)."""
