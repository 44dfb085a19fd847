# syntax=docker/dockerfile:1
#
# genie-worker image: the Temporal worker (default) and, with another command, the
# Headless API simulator or the approvers' inbox:
#   docker run IMAGE                                          # python /app/worker.py
#   docker run --entrypoint python IMAGE -m genie_sim --host 0.0.0.0
#   docker run --entrypoint python IMAGE -m inbox --host 0.0.0.0
#   docker run --entrypoint geniectl IMAGE pending            # the CLI is installed too
#
# Configuration is environment only (GENIE_*, TEMPORAL_*): see docker-compose.yml.
# Validated without a Docker engine by tests/deploy/.

# Build and runtime must share one base: the venv's python is a symlink into it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the project and its dependencies into a self-contained venv -----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Runtime dependencies only, exactly as locked: requirements/runtime.txt is uv.lock's
# export without the [dev] extras (`make lock` writes it), and --require-hashes refuses
# any file whose hash the lock does not name. A layer of its own, so a code change does
# not reinstall them. The pip cache is a build cache mount, so it never lands in a layer.
COPY requirements/runtime.txt ./requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes -r requirements/runtime.txt
# Only what `pip install .` needs (pyproject names README.md as the readme); tests,
# docs and tooling stay out of the image (see also .dockerignore).
COPY pyproject.toml README.md ./
COPY worker.py ./
COPY genie_api/ ./genie_api/
COPY genie_sim/ ./genie_sim/
COPY genie_config/ ./genie_config/
COPY workflows/ ./workflows/
COPY activities/ ./activities/
COPY geniectl/ ./geniectl/
COPY genie_stack/ ./genie_stack/
COPY inbox/ ./inbox/
COPY genie_codec/ ./genie_codec/
COPY genie_telemetry/ ./genie_telemetry/
# The project itself with --no-deps: nothing is resolved here, and pip check fails the
# build if the lock misses a dependency pyproject.toml declares.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
    && pip check \
    && python -c "import worker, genie_sim, geniectl.cli, inbox._app, genie_codec.server"

# --- runtime: the venv, the entry script, an unprivileged user ----------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed numeric uid/gid, so orchestrators can verify "non-root" without /etc/passwd
# (Kubernetes runAsNonRoot) and a mounted secret can be granted to it.
RUN groupadd --system --gid 10001 genie \
    && useradd --system --uid 10001 --gid genie --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin genie

COPY --from=build /opt/venv /opt/venv
# The entry script and the healthcheck are owned by root and read-only for the app user.
COPY worker.py /app/worker.py
COPY deploy/healthcheck.py /app/healthcheck.py

# Metrics are on by default because the HEALTHCHECK reads them; bound to 0.0.0.0 so
# Prometheus can scrape the container (compose does not publish the port).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GENIE_METRICS_HOST=0.0.0.0 \
    GENIE_METRICS_PORT=9464

WORKDIR /app
USER 10001:10001

# 9464: Prometheus metrics (GENIE_METRICS_PORT); 8787: the simulator, 8234: the inbox
# and 8235: the codec server, when run.
EXPOSE 9464 8787 8234 8235

# The worker serves Prometheus metrics once its runtime is up; urllib, so no curl in
# the image. The simulator overrides this in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]

# worker.py handles SIGTERM itself: in-flight stream segments checkpoint and hand over.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/app/worker.py"]
