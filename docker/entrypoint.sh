#!/bin/sh
# The image's entrypoint (docker/Dockerfile): checks that the data directory is writable by the
# user the container runs as, then execs business2api with the container's arguments (so the
# gateway is PID 1 and gets SIGTERM directly).
#
# Why: the image runs as uid 10001 (user business2api). A host directory bind-mounted on
# /app/data (docker run -v "$PWD/data:/app/data", docker/compose.yaml) keeps its host owner, so
# uid 10001 usually cannot write to it, and the gateway would fail on its first write (the
# account database, the generated API key) with a bare "Permission denied". This says which
# directory, which uid, and how to fix it instead. docker/README.md explains the options.
#
# Only DATA_DIR is checked (the image sets it to /app/data; empty = the configuration file's
# data_dir, which this script does not read). pool_server.data_dir is not checked.
set -eu

bin=business2api

# Help and version need no data directory.
for arg in "$@"; do
    case $arg in
        -h | --help | -V | --version | help) exec "$bin" "$@" ;;
    esac
done

uid=$(id -u)
gid=$(id -g)

owner_of() {
    stat -c 'uid %u, gid %g, mode %a' "$1" 2>/dev/null || echo 'owner unknown'
}

refuse() { # <path> <what is wrong>
    cat >&2 <<EOF
business2api (docker entrypoint): $2
  path:      $1 ($(owner_of "$1"))
  container: runs as uid $uid, gid $gid

A bind-mounted host directory keeps its host owner. Either give the host directory mounted
there (./data in the examples) to the image's user, on the host:

    sudo chown -R 10001:10001 ./data

or run the gateway as the directory's owner:

    docker run --user "\$(id -u):\$(id -g)" ...      (compose: user: "<uid>:<gid>")

On SELinux hosts (Fedora, RHEL) also add :Z to the volume (-v "\$PWD/data:/app/data:Z").
See docker/README.md ("The data directory and uid 10001").
EOF
    exit 1
}

dir=${DATA_DIR:-}
if [ -n "$dir" ] && [ "$uid" != 0 ]; then
    if [ -d "$dir" ]; then
        if [ ! -w "$dir" ] || [ ! -x "$dir" ]; then
            refuse "$dir" "the data directory $dir is not writable by this container's user."
        fi
        # What the gateway writes into: the account database and its subdirectories
        # (media, expired accounts, screenshots). A chown without -R leaves these behind.
        for entry in "$dir"/*.redb "$dir"/*/; do
            [ -e "$entry" ] || continue
            if [ ! -w "$entry" ]; then
                refuse "${entry%/}" \
                    "${entry%/} in the data directory is not writable by this container's user."
            fi
        done
    elif [ -e "$dir" ]; then
        refuse "$dir" "the data directory $dir exists but is not a directory."
    else
        # The gateway creates it: its nearest existing ancestor must be writable.
        parent=$(dirname -- "$dir")
        while [ ! -e "$parent" ]; do
            parent=$(dirname -- "$parent")
        done
        if [ ! -w "$parent" ]; then
            refuse "$parent" \
                "the data directory $dir does not exist and cannot be created in $parent."
        fi
    fi
fi

exec "$bin" "$@"
