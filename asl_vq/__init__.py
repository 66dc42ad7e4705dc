"""asl_vq: discrete tokens for ASL fingerspelling (JAX/Flax)."""

__version__ = "0.1.0"
