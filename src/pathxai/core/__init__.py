"""Core pieces every method and metric shares: results, targets, batched evaluation, validation, seeding, and the
resource limits (:mod:`pathxai.core.limits`) checked before any work starts."""
from . import limits
from .baselines import gaussian_blur, make_baseline
from .evaluator import (AUTO, BatchedEvaluator, GradientUnavailableError, accumulate_rows, clear_auto_cache,
                        evaluation_mode)
from .explanation import Explanation, reduce_channels
from .method import (Method, describe_methods, explain, get_method, item_gradients, item_outputs, items_of,
                     list_methods, register_method)
from .seeding import item_generator, item_seed, numpy_rng
from .targets import Target, resolve_target
from .limits import Cost, ResourceLimitError, ResourceLimitWarning
from .validation import ModelNotSupportedError, NonFiniteError, check_input, check_model_output, check_saliency

__all__ = [
    "AUTO", "BatchedEvaluator", "Cost", "Explanation", "GradientUnavailableError", "Method", "ModelNotSupportedError",
    "NonFiniteError", "ResourceLimitError", "ResourceLimitWarning", "Target", "accumulate_rows", "check_input",
    "check_model_output", "check_saliency", "clear_auto_cache", "describe_methods", "evaluation_mode", "explain",
    "gaussian_blur", "get_method", "item_generator", "item_gradients", "item_outputs", "item_seed", "items_of",
    "limits", "list_methods", "make_baseline", "numpy_rng", "reduce_channels", "register_method", "resolve_target",
]
