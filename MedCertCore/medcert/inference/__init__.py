"""Certified inference: reproducible preprocessing, sliding-window forward pass, trajectory fingerprint."""

from medcert.inference.adapter import ModelAdapter, WeightsAdapter
from medcert.inference.preprocess import Preprocessed, PreprocessSpec, preprocess_volume
from medcert.inference.run import SegmentationRun, run_segmentation

__all__ = [
           "ModelAdapter",
           "PreprocessSpec",
           "Preprocessed",
           "SegmentationRun",
           "WeightsAdapter",
           "preprocess_volume",
           "run_segmentation",
]
