"""The web service: a FastAPI app (``create_app``) with a JSON API under /api and a drawing page
at /. ``digitlab serve`` runs it with uvicorn."""

from .app import Settings, create_app
from .inputs import Limits

__all__ = ["create_app", "Settings", "Limits"]
