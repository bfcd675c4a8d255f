"""Running an evaluation: the run as a whole (``job``: every checkpoint on every test set, with ``options``,
``ranks``, ``selection``, ``run_folder`` for resume, ``benchmark_sets`` for the standard benchmarks),
samples through the model (``batch``), how many at once (``auto_batch``), the results files it appends
to (``result_files``) and what was run on what (``provenance``)."""
