# Shared settings of the image scripts (build, push). Sourced, not run.
set -euo pipefail
IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../node/lib.sh
. "$IMAGES_DIR/../node/lib.sh"

# Archives, the Debian package cache, wheels and logs live outside the repository.
IMG_CACHE="$MLC_CACHE/images"
IMG_LIST="$IMG_CACHE/current.list"
# Every image, in build order (cheap ones first).
IMAGE_NAMES="busybox mlcompute pause coredns python-ml pytorch"
