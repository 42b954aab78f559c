"""Metrics: functions on tensors (PSNR, SSIM, codebook statistics, Frechet distance). Nothing here downloads weights."""

from gentok.metrics.basic import CodebookStats, VisionFeatures, frechet_distance, perceptual_metrics_or_skip, psnr, ssim

__all__ = ["CodebookStats", "VisionFeatures", "frechet_distance", "perceptual_metrics_or_skip", "psnr", "ssim"]
