# edgeproxy node image: one node per container, configured by a mounted TOML file.
#
#   docker build -t edgeproxy:local .
#   docker run --rm -p 8080:8080 -p 9080:9080 \
#     -v "$PWD/tiers/compose/edge-1.toml:/etc/edgeproxy/node.toml:ro" edgeproxy:local
#
# The config must listen on 0.0.0.0 (client 8080, admin 9080: HEALTHCHECK, probes and
# Prometheus use the admin listener) and keep its store under /var/cache/edgeproxy (a volume).
# S3 credentials come from the environment named in [upstream.s3], never from the image.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/edgeproxy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgeproxy ./edgeproxy
RUN /opt/edgeproxy/bin/pip install --no-cache-dir /src

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="edgeproxy" \
      org.opencontainers.image.description="Multi-tier edge caching proxy for S3 origins" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/edgeproxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EDGEPROXY_HEALTH_URL=http://127.0.0.1:9080/healthz
RUN groupadd --system --gid 10001 edgeproxy \
    && useradd --system --uid 10001 --gid edgeproxy --no-create-home \
       --home-dir /var/cache/edgeproxy --shell /usr/sbin/nologin edgeproxy \
    && mkdir -p /var/cache/edgeproxy /etc/edgeproxy \
    && chown edgeproxy:edgeproxy /var/cache/edgeproxy
COPY --from=build /opt/edgeproxy /opt/edgeproxy
COPY conf /etc/edgeproxy/examples
WORKDIR /var/cache/edgeproxy
USER 10001:10001
EXPOSE 8080 9080
VOLUME ["/var/cache/edgeproxy"]
# SIGTERM: stop accepting, drain in-flight requests (up to 10 s), exit.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['EDGEPROXY_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["edgeproxy"]
CMD ["serve", "--config", "/etc/edgeproxy/node.toml"]
