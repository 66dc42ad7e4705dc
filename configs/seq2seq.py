"""configs/translate.py under its earlier name, so saved commands still run."""

from asl_vq.configs.translate import get_config  # noqa: F401
