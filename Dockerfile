# fhirgen's container image: built with the same `cargo build --release --locked` as a checkout,
# run from distroless/cc (glibc, libgcc, CA certificates, no shell) as a non-root user.
#
#   docker build -t fhirgen .
#   docker run --rm fhirgen load --fhir-url https://fhir.example.org/r4 --count 1000

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benchmark target; cargo wants its source present to build anything.
COPY benches ./benches
# No BuildKit-only features: Cloud Build, Kaniko and plain `docker build` all take this file.
RUN cargo build --release --locked \
    && cp target/release/fhirgen /usr/local/bin/fhirgen

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/fhirgen /usr/local/bin/fhirgen
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fhirgen"]
CMD ["--help"]
