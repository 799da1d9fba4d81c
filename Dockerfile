# hpsearch worker image (also runs optuna-dashboard). CPU by default; for NVIDIA GPUs build with
#   docker compose build --build-arg EXTRAS="tensorflow[and-cuda]"
# (or "jax[cuda12]" with KERAS_BACKEND=jax; add "torch" for search.sampler: gp). The GPU itself comes
# from the compose reservation.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_BACKEND=tensorflow

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY hpsearch ./hpsearch
RUN pip install . ${EXTRAS}
COPY studies ./studies

# never run as root; the artifact folder is a shared volume
RUN useradd --create-home --uid 10001 hpsearch \
    && mkdir -p /artifacts && chown hpsearch:hpsearch /artifacts
USER hpsearch

ENTRYPOINT ["hpsearch"]
CMD ["--help"]
