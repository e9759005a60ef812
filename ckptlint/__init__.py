"""ckptlint: find code that breaks PyTorch gradient checkpointing."""

from ckptlint.types import Edit, Finding, Fix, Site

__version__ = "0.1.0"

__all__ = ["Edit", "Finding", "Fix", "Site", "__version__"]
