"""HTTP inference for tinylm model folders (`tinylm serve`).

- settings.py: limits and batching knobs (ServeSettings)
- schemas.py: request and response bodies (the OpenAPI schema)
- guard.py: body size (413) and content type (415) checks in front of the app
- batcher.py: dynamic micro-batching of concurrent requests
- app.py: the FastAPI app (create_app)
- server.py: serve (uvicorn) and running (a loopback server in a thread, for tests)

Nothing is imported here, so that `tinylm --help` does not load FastAPI and PyTorch.
"""
