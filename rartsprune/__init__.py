"""rartsprune: structured channel pruning and architecture search for PyTorch with RARTS."""

from ._version import __version__
from .attach import attach_scores
from .calibrate import has_running_stats, recalibrate_bn
from .distill import DistillationLoss
from .errors import RartsPruneError, SearchError, SurgeryError, UnsupportedModelError
from .flops import FlopsReport, compare_reports, flops_report, format_count
from .graph import ChannelGroup, GroupMember, analyze_groups
from .optim import DARTS, METHODS, RARTS, MiLeNAS, make_search_optimizer
from .scores import ScoreHandle, get_handle, has_scores, is_pruned, remove
from .split import split_dataset, split_loaders
from .surgery import PruningPlan, apply_plan, apply_surgery, layer_widths, plan_from_scores
from .width import SelectionConfig, WidthPruner, WidthSearchConfig, prune

__all__ = [
    "__version__",
    "RartsPruneError",
    "SearchError",
    "SurgeryError",
    "UnsupportedModelError",
    "ChannelGroup",
    "GroupMember",
    "analyze_groups",
    "ScoreHandle",
    "attach_scores",
    "get_handle",
    "has_scores",
    "is_pruned",
    "remove",
    "PruningPlan",
    "apply_plan",
    "apply_surgery",
    "layer_widths",
    "plan_from_scores",
    "WidthPruner",
    "SelectionConfig",
    "WidthSearchConfig",
    "prune",
    "split_dataset",
    "split_loaders",
    "FlopsReport",
    "compare_reports",
    "flops_report",
    "format_count",
    "DARTS",
    "METHODS",
    "RARTS",
    "MiLeNAS",
    "make_search_optimizer",
    "DistillationLoss",
    "has_running_stats",
    "recalibrate_bn",
]
