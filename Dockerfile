# One image for all three ListBoss services; docker-compose.yml picks the command
# (listboss-ingest, listboss-segmentation or listboss-contacts).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LISTBOSS_LOG_FORMAT=json

RUN groupadd --system --gid 10001 listboss \
 && useradd --system --uid 10001 --gid listboss --home-dir /app --shell /usr/sbin/nologin listboss

WORKDIR /app

# Only what the install needs: the project metadata, the pins and the package roots.
COPY pyproject.toml constraints.txt ./
COPY gen/ gen/
COPY libs/ libs/
COPY services/ services/
COPY tools/ tools/
RUN pip install --no-cache-dir -c constraints.txt . \
 && rm -rf build *.egg-info \
 && mkdir -p /app/var \
 && chown listboss:listboss /app/var

USER listboss:listboss

# gRPC ports of ingest, segmentation, contacts, and the ingest webhook receiver.
EXPOSE 50051 50052 50053 8080

CMD ["listboss-ingest"]
