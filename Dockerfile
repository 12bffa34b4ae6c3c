# The OCS server image. Build and run (Diameter published, the data kept in a named volume):
#   docker build -t open-ocs .
#   docker run -p 3868:3868 -v ocs-data:/var/lib/ocs/data open-ocs
# The HTTP API (provisioning, /health, /metrics on 8080) has no authentication yet, so the image
# binds it to the container's loopback: nothing outside the container reaches it. To open it on
# a network you trust, bind it to every interface and publish it on the host's loopback only:
#   docker run -p 3868:3868 -p 127.0.0.1:8080:8080 -e OCS_HTTP_HOST=0.0.0.0 -v ocs-data:/var/lib/ocs/data open-ocs
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/open-ocs

COPY pyproject.toml README.md constraints-dev.txt ./
COPY protocol ./protocol
COPY balance ./balance
COPY ocs ./ocs
COPY simulator ./simulator
COPY config ./config
# The runtime dependencies at the versions the tests passed with (constraints-dev.txt).
# data/ is created here, owned by ocs: a new named volume mounted on it takes the image
# directory's owner, so the server can write the embedded Redis (AOF) and the SQLite spool.
RUN pip install --no-cache-dir -c constraints-dev.txt . \
    && useradd --system --home-dir /var/lib/ocs --create-home ocs \
    && mkdir -p /var/lib/ocs/config /var/lib/ocs/data \
    && cp -r config/. /var/lib/ocs/config/ \
    && chown -R ocs:ocs /var/lib/ocs

USER ocs
# config/ocs.toml and config/tariffs.toml are read from here; data/ is written here.
WORKDIR /var/lib/ocs
VOLUME ["/var/lib/ocs/data"]
# RFC 6733 section 11.4: 3868 is the IANA port for Diameter over TCP; 8080 the HTTP API.
EXPOSE 3868 8080
# Diameter on every interface (peers are checked by [diameter] allowed_hosts / allowed_realms);
# the API on loopback until it has authentication (see the top of this file to open it).
ENV OCS_DIAMETER_HOST=0.0.0.0 OCS_HTTP_HOST=127.0.0.1
ENTRYPOINT ["ocs"]
CMD ["serve"]
