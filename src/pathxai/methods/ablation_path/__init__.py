"""Optimised ablation paths (thesis Part II, chapter 2): method, path geometry, scores, projections, reductions.

``px.get_method("ablation_path")`` is :class:`AblationPath`; the building blocks are public so that each piece of
the algorithm can be used and tested on its own.
"""
from .baselines import ablation_baseline, blur_baseline
from .method import AblationPath
from .optimiser import AscentConfig, ascent_step, should_stop, state_saturation
from .paths import (affine_path, blend, is_ablation_path, masses, path_violations, saturation_level, time_grid,
                    time_weights, upsample_masks, with_boundaries)
from .projections import (clamp_path, monotonise, monotonise_path, normalise_step_linf, pinch, pinch_paths,
                          project_to_ablation_paths, remove_mean_gradient, reparametrise_constant_speed, saturate,
                          smooth_state)
from .reductions import (REDUCTIONS, average_heatmap, class_transition_heatmap, class_transition_index,
                         contrastive_heatmap, influence_weighted_heatmap, window)
from .scores import (SCORE_FUNCTIONS, SCORE_NAMES, SCORE_VARIANTS, assemble_score, boundary_straddling_score,
                     canonical_score, contrastive_score, dissipating_score, path_distance, retaining_score)

__all__ = [
    "AblationPath", "AscentConfig", "REDUCTIONS", "SCORE_FUNCTIONS", "SCORE_NAMES", "SCORE_VARIANTS",
    "ablation_baseline", "affine_path", "ascent_step", "assemble_score", "average_heatmap", "blend", "blur_baseline",
    "boundary_straddling_score", "canonical_score", "clamp_path", "class_transition_heatmap",
    "class_transition_index", "contrastive_heatmap", "contrastive_score", "dissipating_score",
    "influence_weighted_heatmap", "is_ablation_path", "masses", "monotonise", "monotonise_path",
    "normalise_step_linf", "path_distance", "path_violations", "pinch", "pinch_paths", "project_to_ablation_paths",
    "remove_mean_gradient", "reparametrise_constant_speed", "retaining_score", "saturate", "saturation_level",
    "should_stop", "smooth_state", "state_saturation", "time_grid", "time_weights", "upsample_masks", "window",
    "with_boundaries",
]
