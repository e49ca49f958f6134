# A clean Debian trixie machine that builds everything and runs every test:
#
#   scripts/docker-build                 # docker, or buildah where no engine runs
#   docker build -t pycoro .             # the same with plain docker
#
# BASE can point at any Debian trixie image, e.g. one made locally by
# `scripts/docker-build --make-local-base` where no registry is reachable.
ARG BASE=debian:trixie-slim
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8

# Build dependencies of CPython (every optional module), of the Rust harness
# (Debian's cargo/rustc 1.85 meet pyo3-ffi 0.30's MSRV) and of the
# scripts.  scripts/build-cpython would install missing
# ones itself; listing them here keeps them in one cached layer.
#
# netbase gives /etc/services: without it getaddrinfo() knows no service
# names and test_asyncio fails (slim and minbase images lack it).
#
# ca-certificates is installed unless /etc/ssl/certs is read-only: that is
# the host's CA bundle mounted into the build (scripts/docker-build does so
# for buildah, where HTTPS needs the host's CAs), and the package's postinst
# could not write there.
RUN if touch /etc/ssl/certs/.pycoro-rw 2>/dev/null; then \
        rm -f /etc/ssl/certs/.pycoro-rw; ca=ca-certificates; \
    else \
        ca=; echo "/etc/ssl/certs is mounted read-only: using the host's CA bundle"; \
    fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends $ca \
        build-essential pkg-config xz-utils rsync git curl netbase \
        libffi-dev libssl-dev zlib1g-dev libbz2-dev liblzma-dev \
        libsqlite3-dev libreadline-dev libncurses-dev uuid-dev libgdbm-dev \
        libgdbm-compat-dev tk-dev \
        cargo rustc rustfmt rust-clippy \
        debian-archive-keyring \
 && rm -rf /var/lib/apt/lists/*

# pip (its own certifi bundle otherwise), cargo and Python's ssl module all
# use the system bundle, so a bundle with a local CA works for all three.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src/pycoro
COPY . .

# scripts/fetch-cpython downloads Debian's python3.13 source package with
# apt, using this image's own mirror configuration.
RUN scripts/setup
RUN scripts/test

CMD ["scripts/test"]
