# The Dockerfile's BUILD_IMAGE where the build cannot reach PyPI: PYTHON_IMAGE plus the wheels of
# requirements.lock (the build context, fetched by the host's pip), which pip installs offline.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY . /wheels
ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels
