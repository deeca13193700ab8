-- Runs once, when the postgres service starts on an empty data volume (the image's
-- /docker-entrypoint-initdb.d convention); POSTGRES_DB already created the `airflow` database.
-- The warehouse gets a database and an owner of its own: the pipeline creates its tables there
-- on first connection. Credentials match AIRFLOW_CONN_CONVERSIONS_WAREHOUSE in compose.yaml.
CREATE ROLE warehouse WITH LOGIN PASSWORD 'warehouse';
CREATE DATABASE warehouse OWNER warehouse;
