# syntax=docker/dockerfile:1
# One image for synthgrad_layer, synthgrad_coordinator and synthgradctl.
#
#   docker build -t synthgrad .
#   docker build --build-arg SYNTHGRAD_MARCH= -t synthgrad .   # CPUs without AVX2
#
# The image sets no ENTRYPOINT: the container command names the binary, for
# example `synthgrad_layer --bind_address=0.0.0.0`, as deploy/docker-compose.yml
# and deploy/k8s/ do.

FROM debian:12 AS builder

# The build packages of deploy/local/install-deps.sh; tests and benchmarks
# are not built here (SYNTHGRAD_BUILD_TESTS=OFF).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libeigen3-dev libabsl-dev libgoogle-glog-dev zlib1g-dev prometheus-cpp-dev \
      libssl-dev \
 && rm -rf /var/lib/apt/lists/*

# -march for every target; x86-64-v3 needs AVX2 and FMA on the machine that
# runs the image. Empty means the compiler's default target.
ARG SYNTHGRAD_MARCH=x86-64-v3

WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
      "-DSYNTHGRAD_MARCH=${SYNTHGRAD_MARCH}" -DSYNTHGRAD_BUILD_TESTS=OFF \
 && cmake --build /build -j "$(nproc)" \
      --target synthgrad_layer synthgrad_coordinator synthgradctl \
 && install -D -m 0755 -t /out/usr/local/bin \
      /build/services/layer/synthgrad_layer \
      /build/services/coordinator/synthgrad_coordinator \
      /build/services/ctl/synthgradctl \
 && install -D -m 0644 -t /out/usr/share/synthgrad/configs configs/*.textproto


FROM debian:12 AS runtime

# Shared libraries of the three binaries (their other dependencies come in
# through these), and Fashion-MNIST at /usr/share/datasets/fashion-mnist,
# the data.dir of the specs in configs/.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libgoogle-glog0v6 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 zlib1g \
      dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 synthgrad \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin synthgrad \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/synthgrad/checkpoints

COPY --from=builder /out/ /

# Fails the build when a shared library is missing or the spec parser does
# not run in this stage.
RUN set -e; \
    for binary in synthgrad_layer synthgrad_coordinator synthgradctl; do \
      if ldd "/usr/local/bin/$binary" | grep 'not found'; then exit 1; fi; \
    done; \
    synthgradctl validate --spec=/usr/share/synthgrad/configs/fashion_mnist_dni.textproto

# A numeric user, so that Kubernetes can check runAsNonRoot without a
# runAsUser of its own.
USER 10001:10001
WORKDIR /usr/share/synthgrad

# gRPC and /metrics ports: coordinator 50050 and 9400, layer group 50051
# and 9401 (the binaries' defaults).
EXPOSE 50050 50051 9400 9401

# The servers log to stderr and handle SIGTERM themselves (a clean gRPC
# shutdown within 2 s), so they run as PID 1 without an init.
CMD ["synthgrad_layer", "--bind_address=0.0.0.0", "--metrics_bind_address=0.0.0.0"]
