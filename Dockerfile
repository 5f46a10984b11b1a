# The image the Helm chart runs: `molt` installed from this repository into a virtualenv,
# on the same slim Python base in both stages, run as an unprivileged user.
#
#   docker build -t REGISTRY/molt:0.1.0 .
#
# For reproducible builds pin the base image by digest:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# Only PyPI is reached during the build (pip install).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/molt \
 && /opt/molt/bin/pip install --upgrade pip \
 && /opt/molt/bin/pip install . \
 && /opt/molt/bin/molt --help > /dev/null

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/molt /opt/molt
ENV PATH=/opt/molt/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["molt"]
CMD ["run", "--leader-elect"]
