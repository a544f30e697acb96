#!/bin/sh
# The official image's RABBITMQ_DEFAULT_USER and _PASS: the user RabbitMQ creates on its first
# start (later starts keep the users they find in /var/lib/rabbitmq).
set -eu
cat >/etc/rabbitmq/conf.d/10-default-user.conf <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
CONF
# Upstream's script, not Debian's wrapper around it: that one logs to a file and swallows signals.
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
