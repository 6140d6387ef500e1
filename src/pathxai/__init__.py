"""pathxai: explain what neural networks do, and measure how faithful the explanations are.

    import pathxai as px
    model = px.models.load("efficientnet-lite0")
    e = px.get_method("ig")(model, batch_size="auto").explain(x, target=None)
    e.saliency()   # (N, H, W)
"""
from . import core, data, methods, models, viz
from . import evaluation
from .evaluation import EvaluationResult, evaluate
from . import metrics
from . import runs
from . import sanity
from .runs import load_run, run
from .core import (Explanation, Method, Target, describe_methods, explain, get_method, list_methods,
                   register_method)

__version__ = "0.1.0"

__all__ = ["EvaluationResult", "Explanation", "Method", "Target", "core", "data", "describe_methods", "evaluate",
           "evaluation", "explain", "get_method",
           "list_methods", "load_run", "methods", "metrics", "models", "register_method", "run", "runs", "sanity",
           "__version__"]
