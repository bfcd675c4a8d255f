"""Running an evaluation: samples through the model (``batch``), how many at once (``auto_batch``),
the results files it appends to (``result_files``) and what was run on what (``provenance``)."""
