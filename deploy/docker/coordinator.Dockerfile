# The coordinator image deploy/kubernetes/coordinator.yaml runs (`fleetshift serve`), built from
# the checkout's root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t registry.example/fleetshift:0.1.0 .
# The same binary is the operator CLI. Non-root (65532, the pod's runAsUser), nothing writable
# needed: configuration and certificates are mounted under /etc/fleetshift.

FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/bootstrap && cargo build --release --locked --bin fleetshift

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/fleetshift /usr/local/bin/fleetshift
USER 65532:65532
# gRPC over mutual TLS, the web console (mutual TLS), then /metrics and the health probes.
EXPOSE 7443 8443 9464
ENTRYPOINT ["/usr/local/bin/fleetshift"]
