"""The HTTP edges: the KServe V2 REST protocol on `--http-port` (`v2.py`), and the uvicorn listener that serves
it and `/metrics` on the server's own event loop (`listener.py`)."""
