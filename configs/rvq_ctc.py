"""configs/tokenizer.py under its earlier name, so saved commands still run."""

from asl_vq.configs.tokenizer import get_config  # noqa: F401
