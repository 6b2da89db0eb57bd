# Shared settings of the real node's scripts (build, up, down, status). Sourced, not run.
set -euo pipefail
NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/lib.sh
. "$NODE_DIR/../cluster/lib.sh"

BIN_CONTAINERD="$MLC_CACHE/containerd-v$CONTAINERD_VERSION"
BIN_CNI="$MLC_CACHE/cni-plugins-v$CNI_PLUGINS_VERSION"
BIN_CRICTL="$MLC_CACHE/crictl-v$CRICTL_VERSION"
BIN_KUBELET="$MLC_CACHE/kubelet-v$K8S_VERSION"
BIN_COREDNS="$MLC_CACHE/coredns-v$COREDNS_VERSION"
# The pause program is ours: its cache key is its source.
PAUSE_HASH=$(sha256sum "$NODE_DIR/pause/main.go" | cut -c1-12)
BIN_PAUSE="$MLC_CACHE/pause-$PAUSE_HASH"

# --- where the node lives -----------------------------------------------------------------------
# Everything of one node: its plane, containerd root, kubelet root, logs, PIDs, saved machine state.
MLC_NODE_RUN="${MLC_NODE_RUN:-${TMPDIR:-/tmp}/mlcompute-node}"
# The network namespace holding the plane, the node and its Pods: loopback and the node's bridge,
# nothing else, so no address outside the machine is routable from inside it.
MLC_NODE_NETNS="${MLC_NODE_NETNS:-mlc-node}"
MLC_NODE_NAME="${MLC_NODE_NAME:-real-node-0}"
MLC_NODE_BRIDGE="${MLC_NODE_BRIDGE:-mlcbr0}"
MLC_NODE_SUBNET="${MLC_NODE_SUBNET:-10.245.0.0/24}"
MLC_NODE_IP="${MLC_NODE_IP:-10.245.0.1}"
MLC_NODE_REGISTRY="${MLC_NODE_REGISTRY:-127.0.0.1:5000}"
# The plane that serves the node runs in the namespace too, with its own run directory.
export MLC_RUN="$MLC_NODE_RUN/plane"
export MLC_SERVICE_CIDR="${MLC_NODE_SERVICE_CIDR:-10.246.0.0/24}"
export MLC_APISERVER_NODE_ADDRESS="$MLC_NODE_IP"
export MLC_CPU_NODES="${MLC_NODE_KWOK_CPU_NODES:-0}" MLC_GPU_NODES="${MLC_NODE_KWOK_GPU_NODES:-0}"
export KUBECACHEDIR="$MLC_RUN/kubectl-cache"
NODE_PIDS="$MLC_NODE_RUN/pids"
NODE_LOGS="$MLC_NODE_RUN/logs"
# Machine state that `up` changes and `down` restores; kept until `down` has restored it, so a run
# that died is restored by the next `down` or `up`.
NODE_SAVED="$MLC_NODE_RUN/saved"
NETNS_PATH="/run/netns/$MLC_NODE_NETNS"
# The kernel settings the kubelet rewrites (protectKernelDefaults: false), all machine-global.
KUBELET_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
# Paths the kubelet, containerd and libcni use whatever their root directories say.
FIXED_PATHS="/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd /etc/cni /opt/cni"
NODE_COMPONENTS="registry containerd kubelet kube-proxy"

# in_ns CMD...: runs CMD in the node's network namespace (and nothing else: the mount namespace
# stays the machine's, so the kubelet's and containerd's mounts see each other).
in_ns() { nsenter --net="$NETNS_PATH" -- "$@"; }

node_exe_ok() { # whether EXE is one of the node's own programs
  case "$1" in "$MLC_CACHE"/*|/usr/bin/docker-registry|/usr/sbin/runc) return 0 ;; *) return 1 ;; esac
}
# node_pid NAME: the saved PID of a node component, if it is alive and still that program.
node_pid() {
  local f="$NODE_PIDS/$1.pid" pid exe
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  node_exe_ok "$exe" && alive "$pid" && echo "$pid"
}
