# syntax=docker/dockerfile:1.7
# Inference: the KServe v2 model server (`edgeaigc serve`), the edge gateway (`edgeaigc gateway`)
# and the model fetcher (`edgeaigc fetch-model`, the init container of every inference pod), on
# onnxruntime's CPU wheels, which exist for linux/amd64 and linux/arm64 (Raspberry Pi 4/5 with a
# 64-bit OS). No torch. Non-root numeric user, read-only root file system; models live in an
# emptyDir the pod mounts at /models.
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
RUN python -m pip install --no-cache-dir --no-compile --prefix=/install --constraint constraints.txt ".[serve]"

FROM ${PYTHON_IMAGE}
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp/matplotlib
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["edgeaigc"]
CMD ["serve", "--model-repository", "/models", "--port", "8080"]
