# pepi-fleet image: `pepi node` and `pepi controller` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs, so edits to tests or docs do not rebuild this layer.
WORKDIR /src
COPY pyproject.toml README.md pepi.thrift ./
COPY pepi_fleet ./pepi_fleet
COPY schemas ./schemas
COPY node_agent ./node_agent
COPY controller ./controller
COPY broker ./broker
RUN pip install . && rm -rf /src

# A fixed uid, and /data owned by it so named volumes start out writable.
RUN useradd --system --uid 10001 --home-dir /data --create-home pepi
USER pepi
WORKDIR /data
VOLUME ["/data"]
# Thrift CameraServer, MJPEG previews (node); web page and REST API (controller).
EXPOSE 6000 6001 8080

ENTRYPOINT ["pepi"]
CMD ["--help"]
