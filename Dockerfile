# One image for every Freight service; the command picks the service:
#   docker run IMAGE serve api|scheduler|runner|filestore
#   docker run IMAGE migrate api scheduler runner filestore
# Dependencies are pinned by requirements.lock (`make lock` regenerates it from pyproject.toml).
ARG PYTHON_IMAGE=python:3.11-slim
# Where the dependencies are installed: PYTHON_IMAGE itself (pip reaches PyPI), or an image of the
# same Python that carries their wheels and points pip at them (`make images`: no index needed).
ARG BUILD_IMAGE=${PYTHON_IMAGE}

FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/freight
COPY requirements.lock /src/
# The pinned dependencies first: a code change does not reinstall them.
RUN /opt/freight/bin/pip install -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY freight_server /src/freight_server
COPY freight /src/freight
RUN /opt/freight/bin/pip install --no-deps /src

FROM ${PYTHON_IMAGE}
# A fixed uid/gid, so that volumes can be prepared for it (chown 10001).
RUN groupadd --system --gid 10001 freight \
 && useradd --system --uid 10001 --gid freight --home-dir /var/lib/freight --create-home freight
COPY --from=build /opt/freight /opt/freight
ENV PATH=/opt/freight/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FREIGHT_HOME=/var/lib/freight \
    FREIGHT_API_BIND=0.0.0.0:5000
WORKDIR /var/lib/freight
# Every service runs as this user except the runner, which compose.yaml runs as root: it drives
# the host's Docker engine through its socket (docs/deploy.md: the trust boundary).
USER freight
EXPOSE 5000 9100
ENTRYPOINT ["freight"]
CMD ["serve", "api"]
