"""Network modules of the unified model (attention, language model, vision encoder, ...)."""
