"""From per-sample results to numbers: statistics.json and the summary CSV, estimates with their
intervals, baselines (majority answers, identity), per-item scores, paired comparisons between
checkpoints and the agreement of a memory plan with full precision."""
