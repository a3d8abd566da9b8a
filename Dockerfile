# Chat Flow in a container: a Rust build stage and a slim Debian runtime.
#
#   docker build -t chat-flow .
#   docker run --rm -p 3001:3001 --stop-timeout 15 \
#     -e APP_ENV=production -e JWT_SECRET=... chat-flow
#
# Configuration is the server's environment variables (README,
# "Configuration"): -e, --env-file, or compose's environment. Set PORT and
# HOST as variables rather than flags: the health check reads the same
# variables to find the server.
#
# Stopping: on SIGTERM the server drains for up to SHUTDOWN_GRACE_MS
# (default 10000 ms) and then exits 0. Docker sends SIGKILL when its own
# stop timeout runs out, and that is 10 s by default: give it more than
# SHUTDOWN_GRACE_MS, or the drain is cut short. `docker stop -t 15`,
# `docker run --stop-timeout 15`, compose `stop_grace_period: 15s`,
# Kubernetes `terminationGracePeriodSeconds: 15`; raise it with
# SHUTDOWN_GRACE_MS.
#
# tests/deploy_files.rs checks what this file promises (non-root user,
# health check, stop signal, port) on every test run; the image itself is
# not built by CI (README, "Deployment").

# ---------------------------------------------------------------- build ----
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer of their own that is reused until a
# manifest, Cargo.lock or another workspace member changes: chat-flow's
# manifest with stand-in sources, built once. sim/ and benches/ are
# workspace members: cargo reads their manifests and wants their targets to
# exist, but only chat-flow is built.
COPY Cargo.toml Cargo.lock ./
COPY sim/ sim/
COPY benches/ benches/
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked -p chat-flow --bin chat-flow \
 && rm -rf src

# The real sources. COPY keeps their modification times, which may be older
# than the stand-ins' build: touch them so that cargo rebuilds chat-flow.
COPY src/ src/
RUN touch src/lib.rs src/main.rs \
 && cargo build --release --locked -p chat-flow --bin chat-flow \
 && install -m 0755 target/release/chat-flow /usr/local/bin/chat-flow

# -------------------------------------------------------------- runtime ----
FROM debian:bookworm-slim

# The binary needs only glibc, libm and libgcc_s, all in the base image.
RUN groupadd --gid 10001 chat-flow \
 && useradd --no-log-init --uid 10001 --gid chat-flow \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin chat-flow

COPY --from=builder /usr/local/bin/chat-flow /usr/local/bin/chat-flow

# The server reads an optional .env from its working directory; mount one
# here read-only if you prefer a file to variables.
WORKDIR /srv/chat-flow
USER 10001:10001

EXPOSE 3001
STOPSIGNAL SIGTERM
# The probe gives up after 2 s by itself (--timeout); Docker's timeout is
# longer so that the probe's own message is what `docker inspect` shows.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/chat-flow", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/chat-flow"]
CMD ["serve"]
