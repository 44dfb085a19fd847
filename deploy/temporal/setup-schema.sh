#!/bin/sh
# Create (or upgrade) Temporal's PostgreSQL schemas. Runs once per `docker compose up`
# in temporalio/admin-tools, before the server starts; safe to re-run: `create` ignores
# an existing database, `setup-schema -v 0.0` skips a database already past 0.0, and
# `update-schema` applies only the versions not yet applied (so bumping the image tags
# upgrades the schema on the next `up`).
#
# Environment: SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD (read by temporal-sql-tool
# itself, so the password is not on the command line), SQL_DATABASE,
# SQL_VISIBILITY_DATABASE.
set -eu

: "${SQL_HOST:?}" "${SQL_USER:?}" "${SQL_PASSWORD:?}"
SQL_PORT="${SQL_PORT:-5432}"
SQL_DATABASE="${SQL_DATABASE:-temporal}"
SQL_VISIBILITY_DATABASE="${SQL_VISIBILITY_DATABASE:-temporal_visibility}"
SCHEMA_ROOT="${TEMPORAL_SCHEMA_ROOT:-/etc/temporal/schema/postgresql/v12}"

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$SQL_HOST" -p "$SQL_PORT" -u "$SQL_USER" "$@"
}

# PostgreSQL is healthy before this runs (compose depends_on: service_healthy).
for pair in "$SQL_DATABASE:temporal" "$SQL_VISIBILITY_DATABASE:visibility"; do
    db="${pair%%:*}"
    schema="${pair#*:}"
    echo "schema $schema -> database $db"
    sql_tool --db "$db" create
    sql_tool --db "$db" setup-schema -v 0.0
    sql_tool --db "$db" update-schema -d "$SCHEMA_ROOT/$schema/versioned"
done
echo "Temporal schemas are up to date"
