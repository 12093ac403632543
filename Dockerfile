# syntax=docker/dockerfile:1
# The base image: any Debian-like image with Python 3.11 and `python3 -m venv`. The default is the
# official one; where no registry is reachable, scripts/container-test.sh builds one from Debian's
# packages and passes it with --build-arg BASE_IMAGE=... (DEPLOYMENT.md, "How the image is checked").
ARG BASE_IMAGE=python:3.11-slim

# Build stage: compile wheels for the pinned runtime requirements (build tools stay here).
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY requirements.txt .
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

# Final stage: the virtualenv and the code only, run as an unprivileged user.
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc \
    GUNICORN_BIND=0.0.0.0:5000
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# Only what the service needs: the entry points, Gunicorn's settings and the package.
COPY --chown=root:root app.py gunicorn.conf.py /app/
COPY --chown=root:root carbon_optimizer /app/carbon_optimizer
# On ECS Fargate /tmp is a task volume; declaring it here makes ECS copy the image's /tmp (mode
# 1777) into it, so UID 10001 can write there (otherwise the volume is root-owned 0755).
VOLUME ["/tmp"]
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request; port=os.environ.get('GUNICORN_BIND','0.0.0.0:5000').rsplit(':',1)[1]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["gunicorn", "-c", "gunicorn.conf.py"]
CMD ["app:app"]
