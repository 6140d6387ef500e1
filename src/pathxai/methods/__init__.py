"""Explanation methods; importing this package registers every method under its short name."""
from .ablation_path import AblationPath
from .gradcam import GradCAM
from .gradients import GradientXInput, Saliency, SmoothGrad, SmoothGradSquared, VarGrad
from .integrated_gradients import IntegratedGradients, quadrature
from .occlusion import Occlusion
from .rise import RISE, rise_masks

__all__ = ["AblationPath", "GradCAM", "GradientXInput", "IntegratedGradients", "Occlusion", "RISE", "Saliency",
           "SmoothGrad", "SmoothGradSquared", "VarGrad", "quadrature", "rise_masks"]
