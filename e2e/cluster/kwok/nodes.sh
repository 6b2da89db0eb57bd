# Prints the fake nodes of the local plane as YAML: a CPU pool and a GPU pool.
# Sourced by `up`; sizes are large enough for the 1000-job benchmark. Counts come from the environment.
print_node() { # print_node NAME POOL CPU MEMORY GPUS
  local name=$1 pool=$2 cpu=$3 mem=$4 gpus=$5
  cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    mlcompute.io/pool: $pool
    node.kubernetes.io/instance-type: $( [ "$gpus" = 0 ] && echo standard-d32 || echo standard-nc24-4gpu )
$( [ "$gpus" = 0 ] || printf '    nvidia.com/gpu.present: "true"\n    accelerator: nvidia\n' )
spec:
$( [ "$gpus" = 0 ] && echo '  taints: []' || printf '  taints:\n  - key: nvidia.com/gpu\n    value: present\n    effect: NoSchedule\n' )
status:
  allocatable: &res
    cpu: "$cpu"
    memory: $mem
    pods: "1000"
$( [ "$gpus" = 0 ] || printf '    nvidia.com/gpu: "%s"\n' "$gpus" )
  capacity: *res
YAML
}

print_nodes() {
  local i
  for i in $(seq 0 $(( ${MLC_CPU_NODES:-3} - 1 ))); do print_node "cpu-pool-$i" cpu 512 2Ti 0; done
  for i in $(seq 0 $(( ${MLC_GPU_NODES:-2} - 1 ))); do print_node "gpu-pool-$i" gpu 96 512Gi 4; done
}
