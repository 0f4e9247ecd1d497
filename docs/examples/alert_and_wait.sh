#!/usr/bin/env bash
# Send an alert through the daemon and wait for the first member to answer it.
# Usage: alert_and_wait.sh CELL TEXT [SOCKET]   (docs/daemon.md, "A shell script")
set -euo pipefail
cell=$1 text=$2
socket=${3:-${CELLRELAY_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/cellrelay}/daemon.sock}

# Follow the cell's events first, so that no answer can come before we listen.
coproc events { curl --silent --no-buffer --unix-socket "$socket" "http://cellrelay/events?cell=$cell"; }
trap 'kill "$events_PID" 2>/dev/null || true' EXIT
read -r _ <&"${events[0]}"  # the daemon's first line ("retry: ..."): the stream is open

alert=$(curl --silent --show-error --unix-socket "$socket" --data-binary "$text" \
    "http://cellrelay/cells/$cell/alerts?priority=urgent" | jq -r .alert.message_id)
echo "sent ${alert:0:8}; waiting for an answer"

while read -r line <&"${events[0]}"; do
    [[ $line == data:* ]] || continue  # ids, blank lines and keep-alive comments
    answer=$(jq -r --arg alert "$alert" \
        'select(.type == "status_received" and .reply.alert_id == $alert)
         | "\(.sender.name): \(.reply.status)"' <<<"${line#data: }")
    if [[ -n $answer ]]; then
        echo "$answer"
        exit 0
    fi
done
echo "the event stream ended" >&2
exit 1
