"""Top-1/top-5 error of any model file on a data set, beside the paper's published number.

:func:`evaluate` (``loop``) runs the model; ``metrics`` holds the arithmetic, ``report`` the report and its CSV,
``sharding`` the torchrun split. The names below are the package's public interface.
"""

from dnet.apps.eval.loop import choose_spec, default_workers, evaluate
from dnet.apps.eval.metrics import binomial_ci95, error_percent, reduce_ten_crop, top5_labels, topk_hits
from dnet.apps.eval.report import EvalReport, check_tolerance, write_predictions

__all__ = ["EvalReport", "binomial_ci95", "check_tolerance", "choose_spec", "default_workers", "error_percent",
           "evaluate", "reduce_ten_crop", "top5_labels", "topk_hits", "write_predictions"]
