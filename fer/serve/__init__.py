"""The HTTP service: `python serve.py` (fer/cli/serve.py) runs infer.py's pipeline per uploaded image
(fer/serve/analyse.py), behind an ASGI app (fer/serve/app.py) that also serves the webcam page (static/)."""
