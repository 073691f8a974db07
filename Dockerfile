# A standalone deployment of the page and its HTTP API (docs/api.md): Voila serving app.ipynb on ONNX Runtime, no torch.
#   docker build -t bear-classifier . && docker run -p 8866:8866 -v bear-feedback:/data bear-classifier
FROM python:3.11.7-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The package (with the page's Voila template and page hook) and its pinned serving set, as requirements-serve.txt
# installs them from a checkout.
COPY pyproject.toml README.md requirements-serve.txt ./
COPY bear_classifier/ bear_classifier/
COPY share/ share/
RUN pip install --no-cache-dir -r requirements-serve.txt

# An unprivileged user owns the feedback volume and nothing else.
RUN useradd --create-home --uid 10001 bear && mkdir /data && chown bear:bear /data
COPY examples/ examples/
COPY app.ipynb voila.json export.onnx export.json ./

USER 10001
ENV BEAR_FEEDBACK_DB=/data/feedback.db
VOLUME /data
EXPOSE 8866
# A static file: checking it starts no kernel (every GET / would start one).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8866/voila/static/health.txt', timeout=4)"]
# Voila listens on localhost only unless told otherwise; in a container it must take outside connections.
CMD ["voila", "app.ipynb", "--no-browser", "--port=8866", "--Voila.ip=0.0.0.0"]
