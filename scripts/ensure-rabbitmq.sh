#!/usr/bin/env bash
# ensure-rabbitmq.sh: make sure RabbitMQ answers at FREIGHT_AMQP_URL (default localhost:5672).
# Does nothing when something answers there. Else, as root on Debian/Ubuntu with the URL on this
# machine's port 5672, installs rabbitmq-server if missing, starts it and enables the
# stream_queue feature flag (Freight's event log is a stream); elsewhere it says what to do.
# Idempotent; safe to call often.
set -euo pipefail

AMQP=${FREIGHT_AMQP_URL:-amqp://guest:guest@localhost:5672/}
LOG=${FREIGHT_RABBITMQ_LOG:-/var/log/freight-rabbitmq.log}
WAIT_S=${FREIGHT_RABBITMQ_WAIT_S:-90}
export PATH="$PATH:/usr/sbin:/sbin"

hostport=${AMQP#*://}; hostport=${hostport##*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=5672

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }

cannot_fix() {
    echo "RabbitMQ does not answer at $host:$port: $1" >&2
    echo "Install RabbitMQ 3.9+ and start it (Debian: apt-get install rabbitmq-server, then" >&2
    echo "rabbitmqctl enable_feature_flag stream_queue), or point FREIGHT_AMQP_URL at one." >&2
    exit 1
}

answers && exit 0

case "$host" in
    localhost | 127.0.0.1 | ::1) ;;
    *) cannot_fix "$host is another machine; start it there" ;;
esac
[ "$port" = 5672 ] || cannot_fix "port $port is not the package's 5672, so this script will not start one"
[ "$(id -u)" = 0 ] || cannot_fix "not root, so this script will not install or start it"
command -v apt-get >/dev/null 2>&1 || cannot_fix "not an apt-based system (Debian/Ubuntu)"

# Serialise concurrent callers so only one of them ever installs or starts the broker.
exec 9>/var/lock/freight-ensure-rabbitmq.lock
flock -w $((WAIT_S + 600)) 9 || cannot_fix "timed out waiting for another ensure-rabbitmq.sh"
answers && exit 0

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "Installing rabbitmq-server ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q rabbitmq-server
fi

if ! answers; then
    if ! pgrep -x beam.smp >/dev/null; then # the package may have started it already
        echo "Starting rabbitmq-server, log: $LOG"
        mkdir -p "$(dirname "$LOG")"
        # setsid+nohup: the broker must outlive this script; 9>&-: and not hold our lock.
        setsid nohup rabbitmq-server </dev/null >>"$LOG" 2>&1 9>&- &
    fi
    for ((i = 0; i < WAIT_S * 2; i++)); do
        answers && break
        sleep 0.5
    done
    answers || cannot_fix "rabbitmq-server did not answer within ${WAIT_S}s; see $LOG"
fi
rabbitmqctl await_startup >/dev/null
rabbitmqctl enable_feature_flag stream_queue >/dev/null
echo "RabbitMQ is up at $host:$port (stream_queue enabled)"
