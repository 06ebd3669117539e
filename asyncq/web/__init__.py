"""asyncq's web dashboard (``pip install 'asyncq[web]'``): :func:`create_dashboard` builds
it as an ASGI app for one App, to mount in any ASGI server or framework; ``asyncq web
MODULE:APP`` serves it alone."""

from __future__ import annotations

from .dashboard import create_dashboard

__all__ = ["create_dashboard"]
