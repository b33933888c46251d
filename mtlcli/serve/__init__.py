"""`mtl serve`: the model behind an HTTP JSON API (Starlette on uvicorn), with concurrent requests
batched together. ``batcher`` gathers texts, ``app`` speaks HTTP, ``server`` runs and stops it."""
