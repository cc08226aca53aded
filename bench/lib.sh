# Sourced by the benchmarks that talk to a local S3-compatible server: a free loopback port
# and a moto server on it with one bucket. Callers own cleanup (they kill "$moto_pid").

# moto, the AWS CLI and boto3 come from the tools virtualenv (made on first use).
# shellcheck source=scripts/python-tools
. scripts/python-tools

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_moto LOG_FILE: start moto on 127.0.0.1, wait until it answers, export throwaway
# credentials for it, create the bucket `ferry-bench`. Sets moto_pid, moto_port and endpoint.
start_moto() {
  moto_port="$(free_port)"
  moto_server -H 127.0.0.1 -p "$moto_port" >"$1" 2>&1 &
  moto_pid=$!
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$moto_port/" >/dev/null 2>&1 && break
    sleep 0.05
  done
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
  endpoint="http://127.0.0.1:$moto_port"
  aws --endpoint-url "$endpoint" s3api create-bucket --bucket ferry-bench >/dev/null
}

# start_keepalive_front LOG_FILE: bench/agent-keepalive-front.py on a free port in front of
# the moto server (start_moto first), wait until it answers. Sets front_pid and front_port.
start_keepalive_front() {
  front_port="$(free_port)"
  python3 bench/agent-keepalive-front.py "$front_port" "$moto_port" >"$1" 2>&1 &
  front_pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$front_port/" >/dev/null 2>&1 && break
    sleep 0.05
  done
}

# payload_deb DIR BYTES: build DIR/bench.deb, package `bench` 1.0 (Architecture: all) with
# BYTES of incompressible payload, stored uncompressed.
payload_deb() {
  mkdir -p "$1/pkg/DEBIAN" "$1/pkg/usr/share/bench"
  printf 'Package: bench\nVersion: 1.0\nArchitecture: all\nMaintainer: Bench <bench@example.invalid>\nDescription: benchmark payload\n' \
    >"$1/pkg/DEBIAN/control"
  head -c "$2" /dev/urandom >"$1/pkg/usr/share/bench/payload"
  dpkg-deb --root-owner-group -Znone --build "$1/pkg" "$1/bench.deb" >/dev/null
}
