# syntax=docker/dockerfile:1
# Build: docker build -t oauth-broker .
# Run:   docker run -p 8080:8080 -v oauth-broker-data:/data oauth-broker

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin broker \
    && mkdir -p /data && chown broker:broker /data
COPY --from=build /src/target/release/oauth-broker /usr/local/bin/oauth-broker
USER broker
WORKDIR /data
VOLUME ["/data"]
ENV OAUTH_BROKER_LISTEN=0.0.0.0:8080 \
    OAUTH_BROKER_DATABASE_URL=sqlite:///data/oauth-broker.db \
    OAUTH_BROKER_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["oauth-broker"]
CMD ["serve"]
