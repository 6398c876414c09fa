# The agent image deploy/kubernetes/postgres-with-agent.yaml runs beside PostgreSQL
# (`fleetshift-agent run`), built from the checkout's root:
#   docker build -f deploy/docker/agent.Dockerfile -t registry.example/fleetshift-agent:0.1.0 .
# It carries the PostgreSQL client programs the agent runs (pg_dump, pg_restore, psql) at the
# major version of the server beside it, or newer (pg_dump refuses newer servers). Runs as the
# postgres user of the pod (999).

FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/bootstrap && cargo build --release --locked --bin fleetshift-agent

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        postgresql-client-15 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fleetshift-agent /usr/local/bin/fleetshift-agent
USER 999:999
# /metrics and the health probes.
EXPOSE 9465
ENTRYPOINT ["/usr/local/bin/fleetshift-agent"]
