#!/usr/bin/env bash
# End-to-end test through a real kube-apiserver (1.20, Debian bookworm's build).
#
# Starts etcd and kube-apiserver on loopback, a simulated kubelet fleet (kubelet-fleet
# --kubelets-only), mirrors the fleet's nodes and pods into the apiserver, registers this
# project's metrics-server as the aggregated API v1beta1.metrics.k8s.io (an ExternalName Service
# to localhost) and checks what clients see: `kubectl top`, the raw API, authorisation through
# the front proxy, TokenReview and SubjectAccessReview, and the deploy/ manifests against the
# real server. A failed precondition (a daemon that does not come up, the APIService never
# Available) stops the run at once; otherwise every check runs and reports PASS or FAIL. Exits
# non-zero, with the tails of every log, if anything failed.
#
# Usage: tests/kube-apiserver/run.sh        (see deploy/README.md, "End-to-end test")
# Environment:
#   KUBE_APISERVER   a kube-apiserver binary to use (otherwise build-apiserver.sh provides one)
#   E2E_CACHE_DIR    where a built kube-apiserver is kept between runs
#   KUBECTL          kubectl 1.27 or newer (default: the newest found)
#   ETCD             etcd binary (default: etcd; installed from etcd-server when missing)
#   METRICS_SERVER / KUBELET_FLEET   prebuilt binaries (default: `cargo build --locked`)
#   E2E_NODES, E2E_PODS_PER_NODE     fleet size (default 5 x 10)
#   E2E_TIMEOUT      bound on the whole run, build included (default 45m)
#   E2E_KEEP=1       keep the work directory (it is kept anyway when a check fails)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# The whole run, build included, is bounded. `timeout` signals its whole process group, which
# holds every process started below.
if [[ -z "${E2E_UNDER_TIMEOUT:-}" ]]; then
    export E2E_UNDER_TIMEOUT=1
    exec timeout --kill-after=30s "${E2E_TIMEOUT:-45m}" "$0" "$@"
fi

nodes_wanted="${E2E_NODES:-5}"
pods_per_node="${E2E_PODS_PER_NODE:-10}"

run_started=$SECONDS
phase_started=$SECONDS
log() { printf '[e2e %4ds] %s\n' "$((SECONDS - run_started))" "$*" >&2; }
phase() {
    if [[ -n "${phase_name:-}" ]]; then
        log "phase '$phase_name' took $((SECONDS - phase_started)) s"
        phase_times+=("$(printf '%-28s %4d s' "$phase_name" "$((SECONDS - phase_started))")")
    fi
    phase_name="$1"
    phase_started=$SECONDS
    log "=== $1"
}
phase_times=()

# ---------------------------------------------------------------------------------------------
# Processes, cleanup and failure reporting
# ---------------------------------------------------------------------------------------------

work=""
pids=()     # started daemons, in start order
names=()    # their names, for messages
logs=()     # their log files
failed=""

print_logs() {
    local i
    for i in "${!logs[@]}"; do
        [[ -f "${logs[$i]}" ]] || continue
        printf '\n----- last 40 lines of %s (%s) -----\n' "${names[$i]}" "${logs[$i]}" >&2
        tail -n 40 "${logs[$i]}" >&2 || true
    done
}

stop_all() {
    local i pid deadline
    # Newest first: the metrics server before the apiserver it talks to, etcd last.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid="${pids[$i]}"
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "${names[$i]} (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    if ((status != 0)) || [[ -n "$failed" ]]; then
        print_logs
        log "FAILED (exit $status${failed:+: $failed}); work directory kept: ${work:-none}"
    fi
    stop_all
    if ((status == 0)) && [[ -z "$failed" && -z "${E2E_KEEP:-}" && -n "$work" ]]; then
        rm -rf "$work"
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated (time limit?)"; exit 124' TERM

fail() {
    failed="$*"
    log "FAIL: $*"
    exit 1
}

# start NAME LOGFILE CMD...: runs CMD in the background, remembering it for the cleanup.
start() {
    local name="$1" logfile="$2"
    shift 2
    "$@" >"$logfile" 2>&1 </dev/null &
    pids+=("$!")
    names+=("$name")
    logs+=("$logfile")
    log "started $name (pid $!)"
}

# alive NAME: fails the run when the named daemon has exited.
alive() {
    local i
    for i in "${!names[@]}"; do
        if [[ "${names[$i]}" == "$1" ]]; then
            kill -0 "${pids[$i]}" 2>/dev/null || fail "$1 exited early (see ${logs[$i]})"
            return 0
        fi
    done
}

# poll DESCRIPTION SECONDS DAEMON FUNCTION [ARGS...]: calls FUNCTION once a second until it
# succeeds (status 0) or SECONDS pass (status 1, the last attempt's output printed); the run fails
# at once if DAEMON has exited. The last attempt's output is kept in $last_output, and written
# under $work/conditions when the condition holds (read them with E2E_KEEP=1).
last_output=""
polls=0
poll() {
    local what="$1" limit="$2" daemon="$3"
    shift 3
    local deadline=$((SECONDS + limit)) tries=0
    polls=$((polls + 1))
    while true; do
        tries=$((tries + 1))
        if last_output="$("$@" 2>&1)"; then
            log "ok: $what (after $tries attempt(s))"
            if [[ -n "$work" ]]; then
                mkdir -p "$work/conditions"
                printf '# %s\n%s\n' "$what" "$last_output" >"$work/conditions/$(printf '%02d' "$polls").txt"
            fi
            return 0
        fi
        [[ -n "$daemon" ]] && alive "$daemon"
        if ((SECONDS >= deadline)); then
            printf '%s\n' "$last_output" | tail -n 30 | sed 's/^/    | /' >&2
            log "NOT TRUE after ${limit} s ($tries attempts): $what"
            return 1
        fi
        sleep 1
    done
}

# wait_for: poll, and the run fails when the condition never holds (a precondition).
wait_for() {
    poll "$@" || fail "$1: not true after $2 s"
}

# check: poll, recording PASS or FAIL; the remaining checks still run, and the run fails at the
# end if any did.
results=()
check_failures=0
check() {
    if poll "$@"; then
        results+=("PASS  $1")
    else
        results+=("FAIL  $1")
        check_failures=$((check_failures + 1))
    fi
}

# A loopback TCP port nothing listens on, below the ephemeral range (so that no outgoing
# connection takes it meanwhile).
taken_ports=" "
free_port() {
    local port tries
    for ((tries = 0; tries < 200; tries++)); do
        port=$((20000 + RANDOM % 12000))
        [[ "$taken_ports" == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            taken_ports+="$port "
            printf '%s\n' "$port"
            return 0
        fi
    done
    fail "no free loopback port found"
}

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

phase "tools"

# Debian packages for what is missing: etcd, openssl, jq.
missing=()
command -v "${ETCD:-etcd}" >/dev/null || missing+=(etcd-server)
command -v openssl >/dev/null || missing+=(openssl)
command -v jq >/dev/null || missing+=(jq)
if ((${#missing[@]})); then
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null ||
        fail "missing ${missing[*]}: install them (Debian packages) or run as root on Debian"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
etcd_bin="$(command -v "${ETCD:-etcd}")"

# kubectl 1.27 or newer: `create token`, `--subresource` and a kustomize that reads deploy/.
kubectl_minor() {
    "$1" version --client -o json 2>/dev/null | jq -r '.clientVersion.minor // empty' | tr -dc '0-9'
}
find_kubectl() {
    local candidate minor best="" best_minor=0
    if [[ -n "${KUBECTL:-}" ]]; then
        printf '%s\n' "$KUBECTL"
        return 0
    fi
    # Newest first among what PATH and a Google Cloud SDK install offer.
    for candidate in $(compgen -c kubectl | sort -u) /usr/lib/google-cloud-sdk/bin/kubectl*; do
        candidate="$(command -v "$candidate" 2>/dev/null || true)"
        [[ -n "$candidate" && -x "$candidate" ]] || continue
        minor="$(kubectl_minor "$candidate")"
        if [[ -n "$minor" ]] && ((minor > best_minor)); then
            best="$candidate"
            best_minor="$minor"
        fi
    done
    printf '%s\n' "$best"
}
kubectl_bin="$(find_kubectl)"
[[ -n "$kubectl_bin" ]] || fail "no kubectl found: set KUBECTL to kubectl 1.27 or newer"
kubectl_version="$(kubectl_minor "$kubectl_bin")"
((${kubectl_version:-0} >= 27)) || fail "$kubectl_bin is kubectl 1.${kubectl_version:-?}: 1.27 or newer is needed"
log "kubectl: $kubectl_bin (1.$kubectl_version); etcd: $etcd_bin"

phase "kube-apiserver binary"
apiserver_bin="$("$here/build-apiserver.sh")" || fail "no kube-apiserver (build-apiserver.sh failed)"
log "kube-apiserver: $apiserver_bin ($("$apiserver_bin" --version 2>/dev/null | head -n 1))"

phase "project binaries"
if [[ -z "${METRICS_SERVER:-}" || -z "${KUBELET_FLEET:-}" ]]; then
    (cd "$root" && cargo build --locked --bin metrics-server --bin kubelet-fleet -p metrics-server -p kubelet-fleet)
fi
target_dir="${CARGO_TARGET_DIR:-$root/target}"
metrics_server_bin="${METRICS_SERVER:-$target_dir/debug/metrics-server}"
fleet_bin="${KUBELET_FLEET:-$target_dir/debug/kubelet-fleet}"
[[ -x "$metrics_server_bin" ]] || fail "no metrics-server binary at $metrics_server_bin"
[[ -x "$fleet_bin" ]] || fail "no kubelet-fleet binary at $fleet_bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/metrics-server-e2e.XXXXXX")"
log "work directory: $work"
pki="$work/pki"
mkdir -p "$pki" "$work/logs" "$work/kubeconfigs"

# ---------------------------------------------------------------------------------------------
# PKI
# ---------------------------------------------------------------------------------------------

phase "pki"

# new_ca NAME CN
new_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 2 \
        -subj "/CN=$2" -keyout "$pki/$1.key" -out "$pki/$1.crt" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}
# new_leaf NAME CA SUBJECT EXTENSIONS
new_leaf() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
        -subj "$3" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    printf '%s\n' "$4" >"$pki/$1.ext"
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$2.crt" -CAkey "$pki/$2.key" -CAcreateserial \
        -days 2 -sha256 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
}
client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'

new_ca ca e2e-cluster-ca
new_ca front-proxy-ca e2e-front-proxy-ca
new_leaf apiserver ca "/CN=kube-apiserver" 'basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1'
new_leaf front-proxy-client front-proxy-ca "/CN=front-proxy-client" "$client_ext"
new_leaf admin ca "/O=system:masters/CN=e2e-admin" "$client_ext"
new_leaf denied ca "/CN=e2e-denied" "$client_ext"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
log "cluster CA, front-proxy CA, apiserver, front-proxy-client, admin, denied, service-account key"

# ---------------------------------------------------------------------------------------------
# etcd and kube-apiserver
# ---------------------------------------------------------------------------------------------

phase "etcd + kube-apiserver"
etcd_client_port="$(free_port)"
etcd_peer_port="$(free_port)"
api_port="$(free_port)"
api="https://127.0.0.1:$api_port"

start etcd "$work/logs/etcd.log" "$etcd_bin" \
    --name e2e --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$etcd_peer_port" \
    --logger zap --log-level warn

# No controller-manager runs: the ServiceAccount admission plugin would refuse every pod for lack
# of the namespace's `default` ServiceAccount, and the endpoint reconciler would try to publish
# 127.0.0.1 as the `kubernetes` Service's endpoint, which validation refuses; both are off.
start kube-apiserver "$work/logs/kube-apiserver.log" "$apiserver_bin" \
    --etcd-servers "http://127.0.0.1:$etcd_client_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --insecure-port 0 --cert-dir "$work/apiserver-certs" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --authorization-mode Node,RBAC \
    --enable-aggregator-routing=false \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" \
    --proxy-client-key-file "$pki/front-proxy-client.key" \
    --disable-admission-plugins ServiceAccount \
    --endpoint-reconciler-type none \
    --profiling=false

# kubeconfig NAME SERVER [--token TOKEN | --client NAME] [--insecure]
kubeconfig() {
    local name="$1" server="$2" file="$work/kubeconfigs/$1.kubeconfig"
    shift 2
    local -a cluster_args=(--server "$server" --certificate-authority "$pki/ca.crt" --embed-certs)
    local -a user_args=()
    while (($#)); do
        case "$1" in
        --token) user_args=(--token "$2") && shift 2 ;;
        --client) user_args=(--client-certificate "$pki/$2.crt" --client-key "$pki/$2.key" --embed-certs) && shift 2 ;;
        --insecure) cluster_args=(--server "$server" --insecure-skip-tls-verify=true) && shift ;;
        *) fail "kubeconfig: unknown option $1" ;;
        esac
    done
    "$kubectl_bin" --kubeconfig "$file" config set-cluster e2e "${cluster_args[@]}" >/dev/null
    "$kubectl_bin" --kubeconfig "$file" config set-credentials "$name" "${user_args[@]}" >/dev/null
    "$kubectl_bin" --kubeconfig "$file" config set-context e2e --cluster e2e --user "$name" >/dev/null
    "$kubectl_bin" --kubeconfig "$file" config use-context e2e >/dev/null
    printf '%s\n' "$file"
}
admin_kc="$(kubeconfig admin "$api" --client admin)"
denied_kc="$(kubeconfig denied "$api" --client denied)"
# The apiserver's own version skew warning is expected: kubectl 1.27+ against 1.20.
k() { "$kubectl_bin" --kubeconfig "$admin_kc" --request-timeout 20s "$@" 2> >(grep -v 'version difference between client' >&2); }

readyz() { "$kubectl_bin" --kubeconfig "$admin_kc" --request-timeout 5s get --raw /readyz; }
wait_for "kube-apiserver /readyz" 180 kube-apiserver readyz
log "server version: $(k version -o json 2>/dev/null | jq -r '.serverVersion.gitVersion')"

# ---------------------------------------------------------------------------------------------
# Simulated kubelets, mirrored as Node and Pod objects
# ---------------------------------------------------------------------------------------------

phase "kubelet fleet + objects"
fleet_dir="$work/fleet"
start kubelet-fleet "$work/logs/kubelet-fleet.log" "$fleet_bin" --kubelets-only \
    --nodes "$nodes_wanted" --pods-per-node "$pods_per_node" \
    --state-dir "$fleet_dir" --port 0 --seed 7
cluster_file() { test -s "$fleet_dir/kubelet-cluster.json" && jq -e '.nodes | length > 0' "$fleet_dir/kubelet-cluster.json"; }
wait_for "kubelet fleet ready (kubelet-cluster.json written)" 60 kubelet-fleet cluster_file
cluster_json="$fleet_dir/kubelet-cluster.json"

jq -r '.nodes[].name' "$cluster_json" | sort >"$work/expected-nodes"
jq -r '.nodes[].pods[] | select(.phase == "Running") | "\(.namespace)/\(.name)"' "$cluster_json" | sort >"$work/expected-pods"
node_count="$(wc -l <"$work/expected-nodes")"
pod_count="$(wc -l <"$work/expected-pods")"
((node_count == nodes_wanted)) || fail "the fleet reports $node_count nodes, $nodes_wanted asked for"
((pod_count > 0)) || fail "the fleet reports no running pods"
log "fleet: $node_count nodes, $pod_count running pods; kubelets at $(jq -r '[.nodes[] | "\(.ip):\(.port)"] | join(" ")' "$cluster_json")"

now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# Namespaces (those the apiserver does not create itself), then nodes and pods, created without
# status; the status (addresses, kubelet port, phase) goes through the status subresource as a
# kubelet would write it.
jq --arg now "$now" '
  def node_object: {
    apiVersion: "v1", kind: "Node",
    metadata: {name: .name, labels: .labels},
    spec: {},
    status: {
      addresses: [{type: "InternalIP", address: .ip}, {type: "Hostname", address: .name}],
      daemonEndpoints: {kubeletEndpoint: {Port: .port}},
      capacity: {cpu: "8", memory: "32Gi", pods: "110"},
      allocatable: {cpu: "8", memory: "32Gi", pods: "110"},
      conditions: [{type: "Ready", status: "True", reason: "KubeletReady",
                    message: "simulated kubelet", lastHeartbeatTime: $now,
                    lastTransitionTime: $now}],
      nodeInfo: {machineID: "", systemUUID: "", bootID: "", kernelVersion: "", osImage: "",
                 containerRuntimeVersion: "", kubeletVersion: "v1.20.2", kubeProxyVersion: "",
                 operatingSystem: "linux", architecture: "amd64"}
    }
  };
  def pod_object($node): {
    apiVersion: "v1", kind: "Pod",
    metadata: {namespace: .namespace, name: .name, labels: .labels},
    spec: {
      nodeName: $node.name,
      automountServiceAccountToken: false,
      containers: [.containers[] | {name: ., image: "registry.invalid/simulated:1"}]
    },
    status: {
      phase: .phase,
      hostIP: $node.ip,
      startTime: $now,
      conditions: [{type: "Ready", status: "True", lastTransitionTime: $now}],
      containerStatuses: [.containers[] | {
        name: ., ready: true, restartCount: 0, started: true,
        image: "registry.invalid/simulated:1", imageID: "",
        state: {running: {startedAt: $now}}}]
    }
  };
  {
    namespaces: {apiVersion: "v1", kind: "List", items: (
      [.nodes[].pods[].namespace] | unique
      | map(select(. != "default" and . != "kube-system" and . != "kube-public" and . != "kube-node-lease"))
      | map({apiVersion: "v1", kind: "Namespace", metadata: {name: .}}))},
    workload: {apiVersion: "v1", kind: "List", items: (
      [.nodes[] | node_object] + [.nodes[] as $node | $node.pods[] | pod_object($node)])}
  }' "$cluster_json" >"$work/objects.json"
jq '.namespaces' "$work/objects.json" >"$work/namespaces.json"
jq '.workload' "$work/objects.json" >"$work/workload.json"
if (($(jq '.items | length' "$work/namespaces.json") > 0)); then
    k create -f "$work/namespaces.json" >/dev/null
fi
k create -f "$work/workload.json" >/dev/null
k replace --subresource status -f "$work/workload.json" >/dev/null
log "created $(jq '.items | length' "$work/namespaces.json") namespaces, $node_count nodes, $(jq '[.items[] | select(.kind == "Pod")] | length' "$work/workload.json") pods; status written"

# What the apiserver now holds must be what the fleet serves.
running_pods() {
    diff <(k get pods -A --field-selector status.phase=Running -o json |
        jq -r '.items[] | select(.spec.nodeName != null) | "\(.metadata.namespace)/\(.metadata.name)"' | sort) \
        "$work/expected-pods"
}
wait_for "every simulated pod is Running and bound in the apiserver" 30 kube-apiserver running_pods
node_addresses() {
    diff <(k get nodes -o json | jq -r '.items[] | "\(.metadata.name) \(.status.addresses[] | select(.type == "InternalIP") | .address):\(.status.daemonEndpoints.kubeletEndpoint.Port)"' | sort) \
        <(jq -r '.nodes[] | "\(.name) \(.ip):\(.port)"' "$cluster_json" | sort)
}
wait_for "every node's InternalIP and kubelet port match the fleet" 30 kube-apiserver node_addresses

# ---------------------------------------------------------------------------------------------
# RBAC, registration and the metrics server
# ---------------------------------------------------------------------------------------------

phase "metrics-server + APIService"
ms_port="$(free_port)"
# The ServiceAccount and RBAC exactly as deploy/ installs them.
k apply -f "$root/deploy/base/service-account.yaml" -f "$root/deploy/base/rbac.yaml" >/dev/null
# The server's identity: a bound token of that ServiceAccount (TokenRequest).
ms_token="$(k create token metrics-server -n kube-system --duration 2h)"
[[ -n "$ms_token" ]] || fail "no token for kube-system/metrics-server"
ms_kc="$(kubeconfig metrics-server "$api" --token "$ms_token")"

start metrics-server "$work/logs/metrics-server.log" "$metrics_server_bin" \
    --kubeconfig "$ms_kc" \
    --authentication-kubeconfig "$ms_kc" \
    --authorization-kubeconfig "$ms_kc" \
    --kubelet-certificate-authority "$fleet_dir/kubelet-ca.crt" \
    --kubelet-client-certificate "$fleet_dir/kubelet-client.crt" \
    --kubelet-client-key "$fleet_dir/kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --kubelet-use-node-status-port \
    --metric-resolution 5s \
    --secure-port "$ms_port" --bind-address 127.0.0.1 \
    --cert-dir "$work/metrics-server-certs" \
    --v 1

# Registered once it serves, so that the aggregator's first discovery and OpenAPI fetches reach it
# (a failed OpenAPI fetch is retried only a minute later). /readyz is served without
# authorisation (the admin's client certificate is presented only because kubectl would otherwise
# prompt for a password); it turns ready once the first scrapes have produced usage.
ms_ready_kc="$(kubeconfig metrics-server-probe "https://127.0.0.1:$ms_port" --client admin --insecure)"
ms_readyz() { "$kubectl_bin" --kubeconfig "$ms_ready_kc" --request-timeout 5s get --raw /readyz; }
wait_for "metrics-server /readyz" 90 metrics-server ms_readyz

# The apiserver reaches the server through an ExternalName Service to localhost, on its port.
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: metrics-server-loopback
  namespace: kube-system
spec:
  type: ExternalName
  externalName: localhost
  ports:
    - name: https
      port: $ms_port
      protocol: TCP
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service:
    name: metrics-server-loopback
    namespace: kube-system
    port: $ms_port
EOF

# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

phase "checks"

apiservice_available() {
    local status
    status="$(k get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}')"
    printf '%s\n' "$status"
    [[ "$status" == True* ]]
}
wait_for "APIService v1beta1.metrics.k8s.io is Available" 120 metrics-server apiservice_available
results+=("PASS  APIService v1beta1.metrics.k8s.io is Available")

# A quantity such as 12m, 0, 345Mi, 1.5Gi is non-zero.
nonzero() { [[ "$1" =~ [1-9] ]]; }

top_nodes() {
    local out name cpu mem missing=0
    out="$(k top nodes --no-headers)" || return 1
    printf '%s\n' "$out"
    while read -r name; do
        read -r cpu mem < <(awk -v n="$name" '$1 == n { print $2, $4 }' <<<"$out")
        if [[ -z "${cpu:-}" ]] || ! nonzero "$cpu" || ! nonzero "$mem"; then
            echo "node $name: cpu=${cpu:-missing} memory=${mem:-missing}"
            missing=1
        fi
        cpu="" mem=""
    done <"$work/expected-nodes"
    return "$missing"
}
check "kubectl top nodes lists all $node_count nodes with non-zero CPU and memory" 120 metrics-server top_nodes
top_nodes_output="$last_output"

top_pods() {
    local out
    out="$(k top pods -A --no-headers)" || return 1
    printf '%s\n' "$out"
    diff <(awk '{ print $1 "/" $2 }' <<<"$out" | sort) "$work/expected-pods"
}
check "kubectl top pods -A lists all $pod_count pods" 60 metrics-server top_pods

raw_pods() {
    local body
    body="$(k get --raw /apis/metrics.k8s.io/v1beta1/pods)" || return 1
    jq -e '.kind == "PodMetricsList" and (.items | all(.containers | length > 0))' <<<"$body" >/dev/null ||
        { echo "not a PodMetricsList with containers in every item: ${body:0:300}"; return 1; }
    diff <(jq -r '.items[] | "\(.metadata.namespace)/\(.metadata.name)"' <<<"$body" | sort) "$work/expected-pods"
}
check "GET /apis/metrics.k8s.io/v1beta1/pods holds all $pod_count pods, each with containers" 30 metrics-server raw_pods

raw_nodes() {
    local body
    body="$(k get --raw /apis/metrics.k8s.io/v1beta1/nodes)" || return 1
    jq -e '.kind == "NodeMetricsList"' <<<"$body" >/dev/null || { echo "not a NodeMetricsList: ${body:0:300}"; return 1; }
    diff <(jq -r '.items[].metadata.name' <<<"$body" | sort) "$work/expected-nodes"
}
check "GET /apis/metrics.k8s.io/v1beta1/nodes holds all $node_count nodes" 30 metrics-server raw_nodes

# Authorisation. A user without RBAC is refused by the apiserver before any proxying.
denied_top() {
    local out
    if out="$("$kubectl_bin" --kubeconfig "$denied_kc" --request-timeout 20s top nodes 2>&1)"; then
        echo "allowed: $out"
        return 1
    fi
    printf '%s\n' "$out"
    grep -qi 'forbidden' <<<"$out"
}
check "user e2e-denied (no RBAC): kubectl top nodes is Forbidden" 20 metrics-server denied_top

# ServiceAccount tokens, checked by the apiserver and by the metrics server itself (TokenReview
# and SubjectAccessReview against the real apiserver).
k create serviceaccount e2e-unauthorised -n default >/dev/null
k create serviceaccount e2e-reader -n default >/dev/null
k create clusterrolebinding e2e-reader --clusterrole system:aggregated-metrics-reader \
    --serviceaccount default:e2e-reader >/dev/null
unauthorised_token="$(k create token e2e-unauthorised -n default --duration 1h)"
reader_token="$(k create token e2e-reader -n default --duration 1h)"
ms_url="https://127.0.0.1:$ms_port"
unauthorised_via_api_kc="$(kubeconfig unauthorised-api "$api" --token "$unauthorised_token")"
unauthorised_direct_kc="$(kubeconfig unauthorised-direct "$ms_url" --token "$unauthorised_token" --insecure)"
reader_direct_kc="$(kubeconfig reader-direct "$ms_url" --token "$reader_token" --insecure)"
garbage_token_kc="$(kubeconfig garbage-direct "$ms_url" --token not-a-valid-token --insecure)"

# expect_refused KUBECONFIG PATH WORD: `kubectl get --raw PATH` must fail, saying WORD.
expect_refused() {
    local out
    if out="$("$kubectl_bin" --kubeconfig "$1" --request-timeout 20s get --raw "$2" 2>&1)"; then
        echo "allowed: ${out:0:300}"
        return 1
    fi
    printf '%s\n' "$out"
    grep -qi "$3" <<<"$out"
}
check "SA default/e2e-unauthorised through the apiserver: 403 Forbidden" 20 metrics-server \
    expect_refused "$unauthorised_via_api_kc" /apis/metrics.k8s.io/v1beta1/nodes forbidden
check "SA default/e2e-unauthorised straight to the metrics server: 403 Forbidden (TokenReview, SubjectAccessReview)" 20 metrics-server \
    expect_refused "$unauthorised_direct_kc" /apis/metrics.k8s.io/v1beta1/nodes forbidden
reader_direct() {
    local body
    body="$("$kubectl_bin" --kubeconfig "$reader_direct_kc" --request-timeout 20s get --raw /apis/metrics.k8s.io/v1beta1/nodes)" || return 1
    diff <(jq -r '.items[].metadata.name' <<<"$body" | sort) "$work/expected-nodes"
}
check "SA default/e2e-reader (system:aggregated-metrics-reader) straight to the metrics server: all $node_count nodes" 20 metrics-server reader_direct
check "invalid bearer token straight to the metrics server: 401 Unauthorized" 20 metrics-server \
    expect_refused "$garbage_token_kc" /apis/metrics.k8s.io/v1beta1/nodes unauthorized

# deploy/ against the real apiserver (1.20): everything server-side, except kinds 1.20 does not
# serve (policy/v1 PodDisruptionBudget), which kubectl checks client-side.
dry_run() {
    local dir="$1" rendered
    rendered="$work/rendered-$(basename "$1").yaml"
    "$kubectl_bin" kustomize "$root/$dir" >"$rendered" || { echo "kubectl kustomize $dir failed"; return 1; }
    k apply --dry-run=server -f "$rendered"
}
check "deploy/: kubectl kustomize | kubectl apply --dry-run=server" 20 kube-apiserver dry_run deploy
check "deploy/high-availability-1.20: kubectl kustomize | kubectl apply --dry-run=server" 20 kube-apiserver dry_run deploy/high-availability-1.20
ha_dry_run() {
    local rendered="$work/rendered-high-availability.yaml" served="$work/high-availability-served.yaml" newer="$work/high-availability-newer.yaml"
    "$kubectl_bin" kustomize "$root/deploy/high-availability" >"$rendered" || return 1
    # Split the rendering: what a 1.20 server serves, and policy/v1 (newer than 1.20).
    awk -v served="$served" -v newer="$newer" '
        function flush() {
            if (doc != "\n") printf "%s---\n", substr(doc, 2) > (doc ~ /\napiVersion: policy\/v1\n/ ? newer : served)
            doc = "\n"
        }
        BEGIN { doc = "\n"; printf "" > served; printf "" > newer }
        /^---$/ { flush(); next }
        { doc = doc $0 "\n" }
        END { flush() }' "$rendered"
    grep -q '^kind: PodDisruptionBudget' "$newer" || { echo "no policy/v1 PodDisruptionBudget in deploy/high-availability"; return 1; }
    k apply --dry-run=server -f "$served" || return 1
    # The server has no policy/v1 to map it to: kubectl decodes it locally ...
    "$kubectl_bin" annotate --local --dry-run=client -o name -f "$newer" e2e/checked=client-side || return 1
    # ... and it is, apiVersion aside, the policy/v1beta1 object the server accepted above.
    [[ -s "$work/rendered-high-availability-1.20.yaml" ]] || { echo "deploy/high-availability-1.20 was not rendered"; return 1; }
    diff <(sed 's#^apiVersion: policy/v1$#apiVersion: policy/v1beta1#' "$rendered") "$work/rendered-high-availability-1.20.yaml"
}
check "deploy/high-availability: dry-run=server, but its policy/v1 PodDisruptionBudget client-side (decoded; equal to the accepted policy/v1beta1 one)" 20 kube-apiserver ha_dry_run

# What `kubectl get` prints comes from the server's meta.k8s.io/v1 Table (upstream's columns:
# NAME CPU MEMORY WINDOW); without one, kubectl falls back to NAME and AGE.
table_rows() {
    local expected="$1" header
    shift
    local out
    out="$(k get "$@")" || return 1
    printf '%s\n' "$out"
    header="$(head -n 1 <<<"$out")"
    if ! [[ "$header" == *CPU* && "$header" == *MEMORY* && "$header" == *WINDOW* ]]; then
        echo "header '$header' lacks CPU, MEMORY and WINDOW: the server answered without a meta.k8s.io/v1 Table (kubectl's fallback columns)"
        return 1
    fi
    if [[ "$1" == podmetrics ]]; then
        diff <(tail -n +2 <<<"$out" | awk '{ print $1 "/" $2 }' | sort) "$expected"
    else
        diff <(tail -n +2 <<<"$out" | awk '{ print $1 }' | sort) "$expected"
    fi
}
check "kubectl get nodemetrics: a Table (NAME CPU MEMORY WINDOW) with all $node_count nodes" 30 metrics-server \
    table_rows "$work/expected-nodes" nodemetrics
check "kubectl get podmetrics -A: a Table (NAMESPACE NAME CPU MEMORY WINDOW) with all $pod_count pods" 30 metrics-server \
    table_rows "$work/expected-pods" podmetrics -A

# The aggregator fetches the server's /openapi/v2 and merges it into the cluster's document.
openapi_merged() {
    local missing
    missing="$(k get --raw /openapi/v2 | jq -r '
        ["NodeMetrics", "NodeMetricsList", "PodMetrics", "PodMetricsList"]
        - (.definitions | keys | map(select(startswith("io.k8s.metrics.pkg.apis.metrics.v1beta1.")) | ltrimstr("io.k8s.metrics.pkg.apis.metrics.v1beta1.")))
        | join(" ")')" || return 1
    [[ -z "$missing" ]] || { echo "the apiserver's /openapi/v2 lacks io.k8s.metrics.pkg.apis.metrics.v1beta1: $missing"; return 1; }
    # kubectl 1.33 reads OpenAPI v3 by default, which 1.20 does not serve.
    k explain nodemetrics --api-version metrics.k8s.io/v1beta1 --output plaintext-openapiv2 | tee /dev/stderr | grep -q 'KIND: *NodeMetrics'
}
check "the apiserver's /openapi/v2 merges the metrics definitions; kubectl explain nodemetrics" 150 metrics-server openapi_merged

phase "done"
log "kubectl top nodes:"
printf '%s\n' "$top_nodes_output" | sed 's/^/    /' >&2
printf '\nPhases:\n'
printf '  %s\n' "${phase_times[@]}"
printf '\nChecks:\n'
printf '  %s\n' "${results[@]}"
if ((check_failures > 0)); then
    fail "$check_failures of ${#results[@]} checks failed (see FAIL above)"
fi
printf '\nEnd-to-end test through kube-apiserver passed in %d s.\n' "$((SECONDS - run_started))"
