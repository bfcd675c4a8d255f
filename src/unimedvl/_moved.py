"""Modules that moved (issue 27's layout), still importable under their old names.

``import unimedvl.flow`` or ``from unimedvl.memory_plan import MemoryPlan`` keep working: a finder at
the end of ``sys.meta_path`` answers for the old name with the module that now holds the code
(the same module object, so patching either name patches both). New code imports the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "unimedvl.init_checkpoint": "unimedvl.checkpoint.create",
    "unimedvl.weight_stream": "unimedvl.checkpoint.weight_stream",
    "unimedvl.placement": "unimedvl.checkpoint.placement",
    "unimedvl.memory_estimate": "unimedvl.checkpoint.memory_estimate",
    "unimedvl.memory_plan": "unimedvl.checkpoint.memory_plan",
    "unimedvl.quantization": "unimedvl.checkpoint.quantization",
    "unimedvl.inference_config": "unimedvl.checkpoint.inference_config",
    "unimedvl.model_card": "unimedvl.checkpoint.model_card",
    "unimedvl.train_memory": "unimedvl.checkpoint.train_memory",
    "unimedvl.adapters": "unimedvl.checkpoint.adapters",
    "unimedvl.adapter_cli": "unimedvl.commands.merge_adapter",
    "unimedvl.info": "unimedvl.commands.info",
    "unimedvl.cli_options": "unimedvl.commands.options",
    "unimedvl.preflight": "unimedvl.commands.preflight",
    "unimedvl.flow": "unimedvl.sampling.flow",
    "unimedvl.data.medical_io": "unimedvl.imaging.medical_io",
    "unimedvl.data.windowing": "unimedvl.imaging.windowing",
    "unimedvl.data.pixel_limit": "unimedvl.imaging.pixel_limit",
    "unimedvl.data.transforms": "unimedvl.imaging.transforms",
    "unimedvl.eval.text_metrics": "unimedvl.metrics.text",
    "unimedvl.eval.image_metrics": "unimedvl.metrics.image",
    "unimedvl.eval.fid": "unimedvl.metrics.fid",
    "unimedvl.eval.choice_matching": "unimedvl.metrics.choice_matching",
    "unimedvl.eval.uncertainty": "unimedvl.metrics.uncertainty",
    "unimedvl.eval.metric_info": "unimedvl.metrics.info",
    "unimedvl.eval.metrics": "unimedvl.metrics",
    "unimedvl.eval.benchmark_scoring": "unimedvl.benchmarks.scoring",
    "unimedvl.eval.vqa_protocols": "unimedvl.benchmarks.protocols",
    "unimedvl.eval.batch": "unimedvl.eval.runner.batch",
    "unimedvl.eval.auto_batch": "unimedvl.eval.runner.auto_batch",
    "unimedvl.eval.result_files": "unimedvl.eval.runner.result_files",
    "unimedvl.eval.provenance": "unimedvl.eval.runner.provenance",
    "unimedvl.eval.plan_agreement": "unimedvl.eval.statistics.plan_agreement",
    "unimedvl.eval.run_statistics": "unimedvl.eval.statistics.run_statistics",
    "unimedvl.eval.stats_csv": "unimedvl.eval.statistics.stats_csv",
    "unimedvl.eval.estimates": "unimedvl.eval.statistics.estimates",
    "unimedvl.eval.baselines": "unimedvl.eval.statistics.baselines",
    "unimedvl.eval.item_scores": "unimedvl.eval.statistics.item_scores",
    "unimedvl.eval.comparison": "unimedvl.eval.statistics.comparison",
    "unimedvl.eval.train_majority": "unimedvl.eval.statistics.train_majority",
    "unimedvl.eval.report_charts": "unimedvl.eval.report.charts",
    "unimedvl.eval.report_html": "unimedvl.eval.report.html",
    "unimedvl.eval.report_samples": "unimedvl.eval.report.samples",
    "unimedvl.eval.report_tables": "unimedvl.eval.report.tables",
    "unimedvl.eval.benchmark_table": "unimedvl.eval.report.benchmark_table",
    "unimedvl.eval.batch_cli": "unimedvl.commands.eval",
    "unimedvl.eval.benchmark_cli": "unimedvl.commands.eval_benchmarks",
    "unimedvl.eval.score_cli": "unimedvl.commands.score",
    "unimedvl.benchmarks.cli": "unimedvl.commands.convert",
    "unimedvl.medsynth.cli": "unimedvl.commands.synth",
    "unimedvl.app.cli": "unimedvl.commands.serve",
    "unimedvl.api.cli": "unimedvl.commands.api",
    "unimedvl.inference.cli": "unimedvl.commands.inference",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the module it moved to."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a blank module; exec_module swaps in the real one

    def exec_module(self, module) -> None:
        # The import system returns what sys.modules holds under the name after exec_module.
        sys.modules[module.__name__] = importlib.import_module(MOVED[module.__name__])


def install() -> None:
    """Adds the finder once (importing ``unimedvl`` calls this)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
