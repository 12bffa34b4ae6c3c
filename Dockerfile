# The OCS server image. Build, make the first API token in the data volume, and run:
#   docker build -t open-ocs .
#   docker run --rm -v ocs-data:/var/lib/ocs/data open-ocs token create --role admin --name operator
#   docker run -p 3868:3868 -p 8080:8080 -v ocs-data:/var/lib/ocs/data open-ocs
# Every HTTP route but /health needs a bearer token (README "Tokens and roles"); give the API a
# certificate ([http] tls_certificate) before publishing it beyond a network you trust. Diameter
# over TLS (5868) is on once [diameter] tls_certificate is set: publish it with -p 5868:5868.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/open-ocs

# WeasyPrint prints the bill PDFs with pango (README "Bills"; without it: HTML only); DejaVu is the
# documents' font. HarfBuzz-subset is left out on purpose: the PDFs' fixed bytes are tested with
# the fontTools subsetter WeasyPrint uses without it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md constraints-dev.txt ./
COPY protocol ./protocol
COPY balance ./balance
COPY ocs ./ocs
COPY simulator ./simulator
COPY config ./config
# The runtime dependencies at the versions the tests passed with (constraints-dev.txt), and the
# codec compiled with mypyc (setup.py: a C compiler for the build, removed after it).
# data/ is created here, owned by ocs: a new named volume mounted on it takes the image
# directory's owner, so the server can write the embedded Redis (AOF) and the SQLite spool.
COPY setup.py ./
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir -c constraints-dev.txt . \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/ocs --create-home ocs \
    && mkdir -p /var/lib/ocs/config /var/lib/ocs/data \
    && cp -r config/. /var/lib/ocs/config/ \
    && chown -R ocs:ocs /var/lib/ocs

USER ocs
# config/ocs.toml and config/tariffs.toml are read from here; data/ is written here.
WORKDIR /var/lib/ocs
VOLUME ["/var/lib/ocs/data"]
# RFC 6733 section 11.4: 3868 for Diameter over TCP, 5868 over TLS/TCP; 8080 the HTTP API.
EXPOSE 3868 5868 8080
# Diameter on every interface (peers are admitted by [diameter] allowed_addresses, allowed_hosts,
# allowed_realms); the API too: every route but /health asks for a bearer token.
ENV OCS_DIAMETER_HOST=0.0.0.0 OCS_HTTP_HOST=0.0.0.0
ENTRYPOINT ["ocs"]
CMD ["serve"]
