"""Release bundles: build once (build.py), verify everywhere (model.py)."""

from .build import build
from .model import Bundle, bundle_dir

__all__ = ["Bundle", "build", "bundle_dir"]
