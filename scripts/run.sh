#!/usr/bin/env bash
# The README's main command: install what is needed (scripts/setup.sh, idempotent), build the
# hosted daemon and run it in the foreground.
#
#   scripts/run.sh [rxenstored options...]
#
# Environment:
#   XENSTORED_SOCKET   socket path (default /var/run/xenstored/socket; clients use XENSTORED_PATH)
#   PERSISTENCE        none | crash-resilient (default none)
#   DATABASE           database path (default /run/xenstored/store.db, on tmpfs)
#   SKIP_SETUP=1       do not run scripts/setup.sh
# Extra arguments are passed to rxenstored (see `rxenstored --help`).
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$top"
if [ "${SKIP_SETUP:-0}" != 1 ]; then
    scripts/setup.sh
fi
cargo build --release -p rxenstored
socket="${XENSTORED_SOCKET:-/var/run/xenstored/socket}"
echo "run.sh: serving $socket (clients: XENSTORED_PATH=$socket xenstore-ls)"
exec target/release/rxenstored \
    --socket "$socket" \
    --persistence "${PERSISTENCE:-none}" \
    --database "${DATABASE:-/run/xenstored/store.db}" \
    "$@"
