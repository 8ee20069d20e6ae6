# The control plane image: one image for every role, chosen by the command.
#
#   docker build -t controlplane .
#   docker run --rm controlplane --help
#   docker run -e GRAPH_BACKEND=neo4j -e GRAPH_URI=bolt://... -e REDIS_URL=redis://... controlplane api --host 0.0.0.0
#
# docker-compose.yml runs it as the API, node agents, supervisors and the scheduler
# (see docs/deployment.md). Its health check lives there, per service.

ARG PYTHON_VERSION=3.11

# --- build: a virtualenv with the project and its dependencies ---------------------------
FROM python:${PYTHON_VERSION}-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/controlplane
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/controlplane/bin/pip install -r /tmp/requirements.txt

COPY controlplane ./controlplane
COPY graph_schema ./graph_schema
COPY workers ./workers
RUN /opt/controlplane/bin/pip install --no-deps . \
    && /opt/controlplane/bin/controlplane --help >/dev/null

# --- runtime -------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim

# util-linux provides `setpriv`: the node agent starts each allocation with PDEATHSIG=KILL
# through it, so allocations die with their agent instead of running unobserved.
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux \
    && rm -rf /var/lib/apt/lists/* \
    && command -v setpriv \
    && groupadd --system --gid 10001 controlplane \
    && useradd --system --uid 10001 --gid controlplane --home-dir /var/lib/controlplane \
        --create-home --shell /usr/sbin/nologin controlplane

COPY --from=build /opt/controlplane /opt/controlplane

ENV PATH=/opt/controlplane/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/controlplane

USER controlplane
WORKDIR /var/lib/controlplane
EXPOSE 8000

ENTRYPOINT ["controlplane"]
CMD ["api", "--host", "0.0.0.0"]
