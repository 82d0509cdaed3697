# Gyre's container image. Build: `docker build -t gyre .`; run: `docker run -p 8000:8000 gyre`
# (README, "Container").
#
# Stage 1 builds the `gyre` binary (release profile) in the official Rust image; stage 2 runs it
# on Debian slim (the same Debian release, so the same glibc) as Centrifugo's image runs
# Centrifugo: user `centrifugo` with uid/gid 1000, working directory /centrifugo (where the
# official Helm chart mounts its config.json, read from the working directory), and the binary
# also reachable as `centrifugo` (the command the chart runs).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gyre \
    && install -m 0755 target/release/gyre /usr/local/bin/gyre

FROM debian:${DEBIAN_RELEASE}-slim
ARG USER=centrifugo
ARG UID=1000
ARG GID=1000
# CA certificates: JWKS over https and TLS to proxies use the system's roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "$GID" "$USER" \
    && useradd --uid "$UID" --gid "$GID" --home-dir /centrifugo --no-create-home \
       --shell /usr/sbin/nologin "$USER"
COPY --from=build /usr/local/bin/gyre /usr/local/bin/gyre
COPY packaging/docker/healthcheck /usr/local/bin/gyre-healthcheck
RUN ln -s gyre /usr/local/bin/centrifugo
WORKDIR /centrifugo
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER ${UID}:${GID}
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["gyre-healthcheck"]
# As Centrifugo's image (`centrifugo`), with /health on so the HEALTHCHECK has something to
# ask. A config.json in /centrifugo is read; options also come from CENTRIFUGO_* variables.
CMD ["centrifugo", "--health.enabled"]
