"""SIFT-based ablation (thesis Part III, chapter 4): a reconstructible scale-space decomposition of an image into
keypoint features, a linear decoder D(theta) of feature gains, and saliency over those gains.

``px.get_method("sift_ablation_path")`` is :class:`SiftAblationPath`, ``px.get_method("sift_rise")`` is
:class:`SiftRISE` and ``px.get_method("sift_relax")`` is :class:`SiftRELAX` (RELAX / U-RELAX for an encoder, over
keypoint gains, :mod:`.sift_relax`); the building blocks are public:

* :mod:`.scale_space` -- sigma grid (Eq. 4.36, Table 4.1), DoG layers and exact reconstruction (Lemma 8, Eq. 4.30);
* :mod:`.keypoints` -- scale-space extrema with Brown-Lowe refinement and contrast/edge cut-offs (Sec. 4.1.2);
* :mod:`.decoder` -- eta-weighted Voronoi cells, partition and smooth-cell decoders, sparsification and mass
  redistribution, D(theta) and the heatmap I(theta) (Sec. 4.1.3, 4.2.3-4.2.4, 4.3.4A);
* :mod:`.metric` -- the L2 feature-weight metric of Eq. 4.45 for the path ascent (Sec. 4.3.3);
* :mod:`.views` -- keypoint circles and path strips (Fig. 4.9).
"""
from .decoder import CELL_KINDS, SiftDecoder, build_decoder, sift_decompose, sparse_cells, voxel_labels
from .keypoints import Keypoints, detect_keypoints, dog_stack
from .metric import reparametrise_constant_speed_weighted, weighted_ascent_step, weighted_masses
from .method import HEATMAPS, SiftAblationPath, SiftRISE, image_heatmap
from .sift_relax import SiftRELAX
from .scale_space import (ScaleSpace, SigmaGrid, collapse_levels, decompose, level_shape, luma, reconstruct,
                          sigma_grid)
from .views import draw_keypoints, path_strip

__all__ = ["CELL_KINDS", "HEATMAPS", "Keypoints", "ScaleSpace", "SiftAblationPath", "SiftDecoder", "SiftRELAX",
           "SiftRISE", "SigmaGrid", "build_decoder", "collapse_levels", "decompose", "detect_keypoints", "dog_stack",
           "draw_keypoints", "image_heatmap", "level_shape", "luma", "path_strip", "reconstruct", "sift_decompose",
           "sigma_grid", "sparse_cells", "voxel_labels", "reparametrise_constant_speed_weighted",
           "weighted_ascent_step", "weighted_masses"]
