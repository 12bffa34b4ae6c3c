# The OCS server image: `docker build -t open-ocs . && docker run -p 3868:3868 open-ocs`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/open-ocs

COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY balance ./balance
COPY ocs ./ocs
COPY simulator ./simulator
RUN pip install --no-cache-dir . && useradd --system --home-dir /var/lib/ocs --create-home ocs

USER ocs
WORKDIR /var/lib/ocs
# RFC 6733 section 11.4: 3868 is the IANA port for Diameter over TCP.
EXPOSE 3868
ENTRYPOINT ["ocs"]
CMD ["serve", "--host", "0.0.0.0"]
