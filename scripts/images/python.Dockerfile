# Debian's Python 3, as the Dockerfile's PYTHON_IMAGE (instead of the official python:3.11-slim).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
CMD ["python"]
