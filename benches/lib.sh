# Shell functions shared by the benchmarks in this directory (sourced, not run).
# They use the caller's globals: WORK, PGBIN, SOCK, PGDATA, LOGS, TIMEOUT, PORT, PG_STARTED, SCALE, ROUNDS.

die() { echo "ERROR: $*" >&2; exit 1; }
log() { echo "## $*" >&2; }

pg() { runuser -u postgres -- "$@"; }

# Mount points under $WORK, deepest first.
mounts_under() { awk -v w="$WORK/" '{ gsub(/\\040/, " ", $5); if (index($5, w) == 1) print $5 }' /proc/self/mountinfo | sort -r; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
median() { printf '%s\n' "$@" | sort -g | awk -v f="${FMT:-%.2f}" '{ v[NR] = $1 } END { if (NR % 2) printf f, v[(NR+1)/2]; else printf f, (v[NR/2] + v[NR/2+1]) / 2 }'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
du_mib() { du -sm "$1" | awk '{ print $1 }'; }

# Runs a timed step; on failure or timeout prints the daemon log tail and dies.
# Usage: timed VAR LOGFILE|- cmd...
timed() {
    local var=$1 lf=$2; shift 2
    local t0 t1 rc=0
    t0=$(now)
    timeout "$TIMEOUT" "$@" >&2 || rc=$?
    t1=$(now)
    if ((rc)); then
        echo "FAILED (rc=$rc$( ((rc == 124)) && echo ", timed out after ${TIMEOUT}s")): $*" >&2
        if [[ $lf != - && -f $lf ]]; then echo "--- tail of $lf ---" >&2; tail -n 60 "$lf" >&2; fi
        exit 1
    fi
    printf -v "$var" '%s' "$(elapsed "$t0" "$t1")"
}

hwm_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

prepare_backup() { # checkpoint, flush, and warm the source so each target starts equal
    pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -qAt -c CHECKPOINT >/dev/null
    # The cluster is live: files may vanish while we read them, which is fine here.
    find "$PGDATA" -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true
    sync
}
verify_restore() { # restored dir, label: checks every file against backup_manifest and parses the WAL
    if ! pg "$PGBIN/pg_verifybackup" -q "$1" >"$LOGS/verify.err" 2>&1; then
        echo "RESTORE VERIFY FAILED ($2):" >&2; cat "$LOGS/verify.err" >&2
        return 1
    fi
}

# True if no TCP socket uses local port $1: nothing listens, and no connection (e.g. one in
# TIME-WAIT whose ephemeral client port this is) would make a bind fail with EADDRINUSE.
port_unused() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 1
    ! command -v ss >/dev/null 2>&1 || [[ -z $(ss -Htan "( sport = :$1 )" 2>/dev/null) ]]
}

# Picks a free port, initdb, starts the cluster (socket in $SOCK, 127.0.0.1),
# pgbench -i -s $SCALE, VACUUM ANALYZE. Sets PORT, PG_STARTED=1 and DBSIZE.
start_cluster() {
    PORT=
    local p
    for p in $(seq 55432 55532); do
        if port_unused "$p" && [[ ! -e $SOCK/.s.PGSQL.$p ]]; then PORT=$p; break; fi
    done
    [[ -n $PORT ]] || die "no free port"
    log "initdb + start postgres on port $PORT"
    pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --no-locale >"$LOGS/initdb.log" 2>&1 \
        || { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
    PG_STARTED=1
    pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w start \
        -o "-p $PORT -k $SOCK -c listen_addresses=127.0.0.1" >/dev/null \
        || { cat "$LOGS/postgres.log" >&2; die "postgres did not start"; }
    log "pgbench -i -s $SCALE"
    pg "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -s "$SCALE" -q postgres >"$LOGS/pgbench.log" 2>&1 \
        || { cat "$LOGS/pgbench.log" >&2; die "pgbench -i failed"; }
    pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -qAt -c 'VACUUM ANALYZE' >/dev/null
    DBSIZE=$(pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -qAt -c "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")
}

# The tail of a report's header: settings (the arguments, else SCALE and ROUNDS), memory and
# the disk under $WORK.
report_settings() {
    echo "- ${*:-SCALE=$SCALE ROUNDS=$ROUNDS} WORK=$WORK"
    echo
    echo '```'
    free -g
    echo
    df -h "$WORK"
    echo '```'
}

# A random hex key in $WORK/key; sets KEYOPTS (pgcryptfs's key options) and BB (pg_basebackup
# -Fp -X stream as postgres against the cluster), for after start_cluster.
backup_setup() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/key"
    chmod 600 "$WORK/key"
    KEYOPTS=(--key-file "$WORK/key" --key-transform hex)
    BB=(runuser -u postgres -- "$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -Fp -X stream)
}

# The checks both benchmarks start with (root, binaries, the postgres user, settings).
check_prerequisites() {
    [[ $(id -u) -eq 0 ]] || die "run as root"
    [[ -x $PGCRYPTFS_SRC ]] || die "pgcryptfs binary not found at $PGCRYPTFS_SRC (set PGCRYPTFS=)"
    [[ -x $PGBIN/pg_basebackup ]] || die "PostgreSQL binaries not found in $PGBIN"
    id postgres >/dev/null 2>&1 || die "OS user postgres missing"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
    [[ $WORK == /*/* ]] || die "WORK must be an absolute path below /"
}

# Installs the Debian packages that provide the commands named ("command:package" pairs).
install_missing() {
    local need=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
    done
    if ((${#need[@]})); then
        log "installing ${need[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    fi
}

# The end of a benchmark's cleanup: keeps the logs of a failed (or warning) run under
# /tmp/$1-logs.<time>, then removes WORK unless something is still mounted under it.
# Usage: finish_work NAME RC WARNINGS
finish_work() {
    local name=$1 rc=$2 warnings=$3
    if ((rc || warnings)) && [[ -d $LOGS ]]; then
        local keep
        keep=/tmp/$name-logs.$(date +%Y%m%d-%H%M%S)
        cp -a "$LOGS" "$keep" && echo "logs kept in $keep" >&2
    fi
    if [[ -n $(mounts_under) ]]; then
        echo "WARNING: still mounted, leaving $WORK in place:" >&2; mounts_under >&2
    else
        rm -rf --one-file-system "$WORK"
    fi
}

# Makes WORK (refusing one that exists), owned by postgres and readable by all, and installs
# the caller's `cleanup` on exit.
make_work() {
    [[ -e $WORK ]] && die "$WORK exists; remove it (or set WORK=) first"
    mkdir -p "$WORK"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    chown postgres: "$WORK"
    chmod 755 "$WORK"
}
