"""Evaluation: metrics (metrics.py), statistics.json and the summary CSV (stats_csv.py), and the
`unimedvl stats` report command (report.py).

Submodules are imported on use so that `import unimedvl` never pulls in scipy, matplotlib or
pytorch-msssim.
"""
