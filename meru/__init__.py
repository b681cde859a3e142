"""meru-bench: MERU (hyperbolic) vs CLIP image-text representation learning, benchmarked end to end."""

__version__ = "0.1.0"
