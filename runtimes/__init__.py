"""Runtimes run a loaded model on batched numpy inputs; they know nothing of batching or gRPC."""

from runtimes.base import Runtime, RuntimeMetadata, TensorSpec

__all__ = ["Runtime", "RuntimeMetadata", "TensorSpec"]
