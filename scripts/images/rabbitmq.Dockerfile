# RabbitMQ from Debian's rabbitmq-server, standing in for the official rabbitmq:3.13-management
# where no registry is reachable: the same port (5672), management UI (15672), data directory
# (/var/lib/rabbitmq), node name (rabbit@HOSTNAME) and RABBITMQ_DEFAULT_USER/_PASS.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/rabbitmq/rabbitmq-env.conf \
 && mkdir -p /etc/rabbitmq/conf.d \
 && chown rabbitmq:rabbitmq /etc/rabbitmq/conf.d
COPY rabbitmq.conf /etc/rabbitmq/rabbitmq.conf
COPY --chown=rabbitmq:rabbitmq rabbitmq-entrypoint.sh /usr/local/bin/rabbitmq-entrypoint
RUN echo '[rabbitmq_management].' >/etc/rabbitmq/enabled_plugins
ENV HOME=/var/lib/rabbitmq
USER rabbitmq
VOLUME /var/lib/rabbitmq
EXPOSE 5672 15672
ENTRYPOINT ["rabbitmq-entrypoint"]
