# syntax=docker/dockerfile:1
# The service's image (docs/deploy.md): `docker build -t stratus-ia-database .`, then
# `docker run -p 8080:8080 -e DATABASE_URL=… -e STRATUS_API_JWT_SECRET=… stratus-ia-database`.
# The runtime stage repeats scripts/wheel_check.sh's steps, which `make test`'s CI runs in a virtual environment where
# Docker is not available: the runtime lock with hashes, the wheel without dependencies, `pip check`, then
# `stratus-db serve`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements/build.txt requirements/build.txt
RUN python -m pip install --no-cache-dir --require-hashes -r requirements/build.txt
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m build --wheel --no-isolation --outdir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/stratus/bin:$PATH \
    STRATUS_DATA_DIR=/var/lib/stratus \
    PORT=8080
RUN useradd --system --uid 10001 --user-group --no-create-home stratus \
    && install -d -o stratus -g stratus /var/lib/stratus
COPY requirements/runtime.txt /tmp/runtime.txt
COPY --from=build /wheels /tmp/wheels
RUN python -m venv /opt/stratus \
    && /opt/stratus/bin/pip install --no-cache-dir --require-hashes -r /tmp/runtime.txt \
    && /opt/stratus/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && /opt/stratus/bin/pip check \
    && rm -rf /tmp/runtime.txt /tmp/wheels
USER stratus
WORKDIR /var/lib/stratus
EXPOSE 8080
# The service only: migrations run apart, as a Cloud Run job (`stratus-db migrate`), never at each start.
CMD ["stratus-db", "serve"]
