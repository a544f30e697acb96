# PostgreSQL from Debian's packages, standing in for the official postgres:16 where no registry is
# reachable: the same port (5432), data directory (/var/lib/postgresql/data) and
# POSTGRES_USER/_PASSWORD/_DB, read when the data directory is first made.
ARG BASE
FROM ${BASE}
# Debian's packaging makes a cluster of its own on install; the entrypoint makes ours instead.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/freight.conf \
 && apt-get update \
 && apt-get install -y postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)" /usr/local/lib/postgresql-bin \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/local/lib/postgresql-bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint"]
