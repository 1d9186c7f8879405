# A NATS image made without a registry: the pinned nats-server that scripts/setup installs
# (.tandem/bin/nats-server, checked against its SHA-256 there), on nothing (FROM scratch), run
# as an unprivileged user. It stands in for the official `nats:2.12.8` image where none can be
# pulled: same entry point (/nats-server), same arguments, so the compose files run unchanged
# (`TANDEM_NATS_IMAGE` names it: the compose files read it).
#
# Built by scripts/compose-env from a staging folder holding `nats-server` and an empty `data/`
# (the store's mount point, owned by the user, so that a new volume mounted there is too).

FROM scratch
COPY nats-server /nats-server
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
# Clients, cluster routes, HTTP monitoring.
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
