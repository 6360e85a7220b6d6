-- Run once by the postgres image on an empty data volume
-- (mounted in /docker-entrypoint-initdb.d by docker-compose.yml).
-- Each service owns its own database; the services create their tables by migration.
CREATE DATABASE listboss_segmentation;
CREATE DATABASE listboss_contacts;
-- The cluster profile's replicas (docker compose --profile cluster).
CREATE DATABASE listboss_cluster_segmentation;
CREATE DATABASE listboss_cluster_contacts;
