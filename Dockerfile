# syntax=docker/dockerfile:1
# One image with every binary of the workspace: the jobs, the runner and archive-sim (the
# synthetic archive the demo DAG serves to itself). The Argo manifests in k8s/ run it.
#   docker build -t binance-pipeline .
#   docker run --rm binance-pipeline runner dags/demo.yaml

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The crate registry and the target folder live in BuildKit cache mounts: a rebuild after a
# source change downloads nothing and recompiles only the workspace's own crates. Every binary
# but the benchmarks is copied out of the cache, so a new job needs no change here.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -perm -u=x ! -name 'bench-*' -exec cp {} /out/ \;

FROM debian:bookworm-slim
# ca-certificates: HTTPS to the archive and S3. Versions float with the bookworm point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pipeline \
    && useradd --system --uid 10001 --gid pipeline --home-dir /work --create-home \
       --shell /usr/sbin/nologin pipeline
COPY --from=build /out/ /usr/local/bin/
COPY dags/ /work/dags/
# glibc malloc settings for the jobs, as the runner sets them (jobs/runner/src/exec.rs).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=67108864:glibc.malloc.hugetlb=1
USER 10001:10001
WORKDIR /work
CMD ["runner", "--help"]
