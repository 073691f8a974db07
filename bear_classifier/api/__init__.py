"""The HTTP API for programs, on the page's own server and port: classify images, the model's facts, health, the
OpenAPI document and the "Use via API" page; and the Python client that calls it. Never imports torch."""
