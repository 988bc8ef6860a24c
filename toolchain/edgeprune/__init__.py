"""edgeprune: PyTorch model -> pruned int8 TFLite -> C for Cortex-M and Arm phones."""

__version__ = "0.1.0"
