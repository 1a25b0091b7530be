# syntax=docker/dockerfile:1.7
# The operator: kopf + the numpy/onnxruntime policy runtime and the shipped ONNX actors. No torch.
# Built for linux/amd64 and linux/arm64 (`make images`); runs as a non-root numeric user so the
# Pod Security "restricted" profile can verify runAsNonRoot, with a read-only root file system.
#
# The Python side is exactly what CI tests: the same interpreter minor version (3.11) and every
# runtime dependency pinned by ../constraints.txt, written from CI's environment.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY cli cli
COPY policy policy
COPY inference inference
COPY cluster cluster
COPY operator operator
RUN python -m pip install --no-cache-dir --no-compile --prefix=/install --constraint constraints.txt ".[operator]"

FROM ${PYTHON_IMAGE}
COPY --from=build /install /usr/local
# Bytecode cannot be written on a read-only root; matplotlib (imported by the benchmark module
# the CLI can reach) gets a writable config dir from the chart's /tmp emptyDir.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp/matplotlib
USER 65532:65532
EXPOSE 8000 8080
ENTRYPOINT ["edgeaigc"]
CMD ["operator", "--all-namespaces"]
