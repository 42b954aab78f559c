"""Metrics: functions on tensors. basic.py: PSNR, SSIM, codebook statistics; distribution.py: FID, Inception Score,
precision/recall on any feature network; inception.py: the Inception features and the accumulator behind rFID / gFID;
lpips.py: LPIPS. Nothing here downloads weights unless asked to explicitly."""

from gentok.metrics.basic import CodebookStats, VisionFeatures, frechet_distance, perceptual_metrics_or_skip, psnr, ssim
from gentok.metrics.distribution import (FeatureStats, fid, frechet_distance_from_stats, inception_score,
                                         precision_recall)

__all__ = ["CodebookStats", "VisionFeatures", "frechet_distance", "perceptual_metrics_or_skip", "psnr", "ssim",
           "FeatureStats", "fid", "frechet_distance_from_stats", "inception_score", "precision_recall"]
