"""The notebook lab: thin ipywidgets views over tunekit's core API.

    import tunekit as tk
    tk.Lab()

Widgets hold state (traitlets) and call the core; no training or analysis logic
lives here.
"""
from tunekit.widgets.lab import Lab

__all__ = ["Lab"]
