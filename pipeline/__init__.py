"""Build host: training, one-step model, conversion, quantization, verification, export."""
__version__ = "0.1.0"
