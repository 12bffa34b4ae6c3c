# The OCS server image: `docker build -t open-ocs . && docker run -p 3868:3868 open-ocs`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/open-ocs

COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY balance ./balance
COPY ocs ./ocs
COPY simulator ./simulator
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --home-dir /var/lib/ocs --create-home ocs \
    && mkdir -p /var/lib/ocs/config && cp -r config/. /var/lib/ocs/config/ && chown -R ocs /var/lib/ocs

USER ocs
# config/ocs.toml and config/tariffs.toml are read from here; data/ (embedded Redis with AOF,
# the SQLite spool) is written here: mount a volume on /var/lib/ocs/data to keep it.
WORKDIR /var/lib/ocs
# RFC 6733 section 11.4: 3868 is the IANA port for Diameter over TCP.
EXPOSE 3868 8080
ENTRYPOINT ["ocs"]
ENV OCS_DIAMETER_HOST=0.0.0.0 OCS_HTTP_HOST=0.0.0.0
CMD ["serve"]
