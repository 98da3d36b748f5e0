# syntax=docker/dockerfile:1
# The agent-mesh node image: one static-layout binary, its shared libraries,
# a non-root user and the default config, on an empty base (no shell, no
# package manager). `docker build -t agent-mesh .` compiles it here;
# scripts/build-image.sh builds the same final stage around a binary that is
# already built, with no compiler and no registry.
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS rootfs
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin agent-mesh \
 && scripts/image-rootfs.sh target/release/agent-mesh /rootfs

# --- the image: scripts/build-image.sh builds from this line on, around a prebuilt /rootfs ---
FROM scratch
COPY --from=rootfs /rootfs/ /
USER 65532:65532
WORKDIR /var/lib/agent-mesh
# Raft store, node.json and the model cache: keep it on a volume.
VOLUME ["/var/lib/agent-mesh"]
# P2P (TCP and QUIC), the Raft direct link, the HTTPS API.
EXPOSE 7000/tcp 7000/udp 7001/tcp 8080/tcp
# The mesh CA the health check verifies the API with (the default config's
# CA folder; deployments that mount it elsewhere set AGENT_MESH_CA too).
ENV AGENT_MESH_CA=/etc/agent-mesh/ca
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/agent-mesh", "health", "--api", "https://127.0.0.1:8080"]
ENTRYPOINT ["/usr/local/bin/agent-mesh"]
CMD ["node", "--config", "/etc/agent-mesh/node.toml"]
