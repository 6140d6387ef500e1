"""Explanation methods; importing this package registers every method under its short name."""
from .ablation_path import AblationPath
from .attention_rollout import AttentionRollout, GradRollout
from .blur_ig import BlurIG
from .gradcam import GradCAM
from .guided_ig import GuidedIG
from .gradients import GradientXInput, Saliency, SmoothGrad, SmoothGradSquared, VarGrad
from .fisher import (ClassCovariance, ConvCovariance, Covariance, DenseCovariance, FunctionalInformation,
                     IsotropicCovariance, TokenCovariance, fit_covariance)
from .integrated_gradients import IntegratedGradients, quadrature
from .occlusion import Occlusion
from .relax import RELAX, URELAX, error_bound, masks_needed, relax_masks, u_relax
from .representation_saliency import (RepresentationGuidedSaliency, RepresentationSaliency,
                                      RepresentationSmoothSaliency)
from .rise import RISE, rise_masks
from .samp import SAMP, SAMPPlusPlus, default_step_size
from .captum_perturbation import KernelShap, Lime
from .energy_occlusion import EnergyOcclusion
from .l2x import L2X
from .sointer import SOInter
from .sift_ablation import SiftAblationPath, SiftRELAX, SiftRISE
from .captum_gradients import DeepLift, GradientShap, GuidedBackprop
from .cam_variants import GradCAMPlusPlus, ScoreCAM

__all__ = ["GradCAM", "GradientXInput", "IntegratedGradients", "Occlusion", "RISE", "Saliency", "SmoothGrad",
           "SmoothGradSquared", "VarGrad", "quadrature", "rise_masks",
           "RELAX", "URELAX", "RepresentationGuidedSaliency", "RepresentationSaliency", "RepresentationSmoothSaliency",
           "error_bound", "masks_needed", "relax_masks", "u_relax",
           "ClassCovariance", "ConvCovariance", "Covariance", "DenseCovariance", "FunctionalInformation",
           "IsotropicCovariance", "TokenCovariance", "fit_covariance",
           "EnergyOcclusion", "KernelShap", "L2X", "Lime", "SOInter", "AttentionRollout", "GradRollout",
           "DeepLift", "GradientShap", "GuidedBackprop", "GradCAMPlusPlus", "ScoreCAM"]
