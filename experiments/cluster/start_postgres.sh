#!/usr/bin/env bash
# Start a PostgreSQL server for the study, as an ordinary user (no root, no system service):
#   experiments/cluster/start_postgres.sh DIR [PORT]
# DIR must be on a disk local to the database host (not NFS). Prints the storage URL to use.
# Stop it with: pg_ctl -D DIR/data stop
# Needs the server binaries: Debian/Ubuntu `apt-get install postgresql`, conda `postgresql`,
# or a module (`module load postgresql`). The password goes to ~/.pgpass, never into the URL.
set -euo pipefail
dir=$(realpath -m "${1:?usage: start_postgres.sh DIR [PORT]}")
port=${2:-5432}
bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
export PATH="${bindir:+$bindir:}$PATH"
command -v initdb >/dev/null || { echo "initdb not found: install postgresql or set PG_BINDIR" >&2; exit 1; }
mkdir -p "$dir" && chmod 700 "$dir"   # the Unix socket lives here: only you can reach it
if [ ! -d "$dir/data" ]; then
  password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  initdb -D "$dir/data" -U nas --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
         --pwfile=<(echo "$password") >/dev/null
  # many workers x (pool + heartbeat + lock connections): leave room
  cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '*'
port = $port
max_connections = 500
unix_socket_directories = '$dir'
CONF
  echo "host all nas 0.0.0.0/0 scram-sha-256" >> "$dir/data/pg_hba.conf"
  echo "host all nas ::/0 scram-sha-256" >> "$dir/data/pg_hba.conf"
  touch ~/.pgpass && chmod 600 ~/.pgpass
  echo "*:$port:*:nas:$password" >> ~/.pgpass   # psycopg reads it: URLs stay password-free
fi
pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
createdb -h "$dir" -p "$port" -U nas nas 2>/dev/null || true
echo "postgresql://nas@$(hostname -f):$port/nas"
