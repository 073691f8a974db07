"""What the Jupyter server runs for the page: the kernel websocket guard, and whose kernel is whose."""
