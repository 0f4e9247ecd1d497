#!/usr/bin/env bash
# The daemon's API with curl and jq, over its Unix socket (docs/daemon.md, "curl").
# Usage: daemon_curl.sh [SOCKET]   (default: the socket beside your keystore)
set -euo pipefail
socket=${1:-${CELLRELAY_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/cellrelay}/daemon.sock}
api() { curl --silent --show-error --unix-socket "$socket" "$@"; }

# Publish in one line, as with ntfy: the body is the text, the options are in the query.
api -d 'Agents at 14th & Main' 'http://cellrelay/cells/Eastside/alerts?priority=urgent&place=14th%20%26%20Main' |
    jq -r '"sent \(.alert.message_id[:8]) to \(.recipients) other members"'

# The same as JSON, with every option.
api --json '{"text": "Two vans on 15th", "priority": "emergency", "ttl": 1800}' \
    http://cellrelay/cells/Eastside/alerts | jq -r '"sent \(.alert.priority) \(.alert.message_id[:8])"'

# Active alerts, most urgent first, and who is answering.
api http://cellrelay/cells/Eastside/alerts |
    jq -r '.alerts[] | "\(.alert.priority): \(.alert.text) (\(.responders | length) answers)"'

# Errors are RFC 9457 problem documents with a stable code.
api http://cellrelay/cells/Westside/alerts | jq -r '"\(.status) \(.code)"'
