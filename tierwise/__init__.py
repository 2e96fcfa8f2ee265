"""tierwise: self-hosted quality evaluation and adaptive routing for LLM applications.

This package is the composition root only (settings, app factory, CLI); the planes are the
``router`` (data plane) and ``evaluator`` (control plane) packages.
"""

__version__ = "0.1.0"
