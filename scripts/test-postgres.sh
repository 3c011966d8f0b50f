# Sourced by scripts/test: a PostgreSQL server for the tests.
#
# start_test_postgres uses the server on 127.0.0.1:5432 (trust auth, user postgres)
# when it answers, and otherwise starts a throwaway cluster (initdb in a temporary
# directory, on a free loopback port). It exports the server's URL as
# SWARMFEED_TEST_POSTGRES and SWARMFEED_TEST_DB_PREFIX, the prefix of every database
# this run creates (each test makes its own). stop_test_postgres, run at exit, drops
# what this run left on a shared server, or stops and deletes the throwaway cluster.

TEST_PG_DIR=""
TEST_PG_BIN=""
TEST_PG_AS=()

# Where initdb and pg_ctl are: /usr/local/bin, else the newest Debian install.
find_pg_bin() {
  local d
  for d in /usr/local/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

# Whether a PostgreSQL server that lets user postgres in without a password answers.
pg_answers() {
  if command -v psql >/dev/null 2>&1; then
    psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
  else
    local hostport=${1#*@}
    hostport=${hostport%%/*}
    (exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}") 2>/dev/null
  fi
}

free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

start_throwaway_postgres() {
  if ! TEST_PG_BIN=$(find_pg_bin); then
    echo "no PostgreSQL server answers and initdb is missing; installing Debian's postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    TEST_PG_BIN=$(find_pg_bin)
  fi
  TEST_PG_DIR=$(mktemp -d /tmp/swarmfeed-test-pg.XXXXXX)
  # initdb refuses to run as root: run the cluster as the postgres user then.
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$TEST_PG_DIR"
    TEST_PG_AS=(runuser -u postgres --)
  fi
  local port
  port=$(free_port)
  "${TEST_PG_AS[@]}" "$TEST_PG_BIN/initdb" -D "$TEST_PG_DIR/data" -U postgres --auth=trust \
    -E UTF8 --no-locale --no-sync >"$TEST_PG_DIR/initdb.log"
  "${TEST_PG_AS[@]}" "$TEST_PG_BIN/pg_ctl" -D "$TEST_PG_DIR/data" -l "$TEST_PG_DIR/server.log" -w \
    -o "-p $port -k $TEST_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  SWARMFEED_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
}

start_test_postgres() {
  SWARMFEED_TEST_DB_PREFIX="sftest$$"
  SWARMFEED_TEST_POSTGRES="postgres://postgres@127.0.0.1:5432/postgres"
  if pg_answers "$SWARMFEED_TEST_POSTGRES"; then
    echo "using the PostgreSQL server on 127.0.0.1:5432"
  else
    start_throwaway_postgres
    echo "started a throwaway PostgreSQL cluster at ${SWARMFEED_TEST_POSTGRES#*@}"
  fi
  export SWARMFEED_TEST_POSTGRES SWARMFEED_TEST_DB_PREFIX
}

stop_test_postgres() {
  if [ -n "$TEST_PG_DIR" ]; then
    "${TEST_PG_AS[@]}" "$TEST_PG_BIN/pg_ctl" -D "$TEST_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TEST_PG_DIR"
  elif command -v psql >/dev/null 2>&1; then
    local name
    for name in $(psql "$SWARMFEED_TEST_POSTGRES" -Atqc \
      "SELECT datname FROM pg_database WHERE datname LIKE '${SWARMFEED_TEST_DB_PREFIX}\_%'"); do
      psql "$SWARMFEED_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null || true
    done
  fi
}
