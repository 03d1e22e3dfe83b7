#!/usr/bin/env bash
# Build the mdfnet base images and one image per row of components/steps.tsv, i.e. per pipeline step + serve
# (version = mdfnet.__version__):
#   <registry>/mdfnet-base:<version>        images/base/Dockerfile --target base (no torch)
#   <registry>/mdfnet-base-torch:<version>  images/base/Dockerfile --target base-torch (only if a torch step is built)
#   <registry>/mdfnet-<step>:<version>      images/step/Dockerfile FROM one of the two, as components/steps.tsv says
#
# usage: images/build.sh [--registry R] [--base IMAGE] [--push] [--dry-run] [STEP ...]
#   --registry R   image registry/prefix (default: $MDFNET_IMAGE_REGISTRY or ghcr.io/mdfnet, as components/)
#   --base IMAGE   Python 3.11 base for the mdfnet base image (default: $BASE or python:3.11-slim)
#   --push         push every image after building it
#   --dry-run      print the docker commands instead of running them
#   STEP ...       build only these step images, e.g. expand-grid (the base images they need are built first)
# Environment: DOCKER (docker CLI, default docker), DOCKER_HOST as usual.
# The build context is a staged minimal copy of the repository (pyproject.toml, README.md, mdfnet/,
# images/requirements/), so .venv and data folders are never sent to the engine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# components/steps.tsv: image (the component name with '_' -> '-'), base (base | base-torch), component, modules
# to import (the one map, also read by components/__init__.py)
STEPS=()
declare -A FROM_BASE=() IMPORTS=()
while read -r image from _component modules; do
  [[ -z "$image" || "$image" == \#* ]] && continue
  STEPS+=("$image")
  FROM_BASE[$image]=$from
  IMPORTS[$image]=$modules
done <"$root/components/steps.tsv"

registry=${MDFNET_IMAGE_REGISTRY:-ghcr.io/mdfnet}
base=${BASE:-python:3.11-slim}
push=0
dry=0
only=()
while (($#)); do
  case "$1" in
    --registry) registry=${2:?--registry needs a value}; shift 2 ;;
    --base) base=${2:?--base needs a value}; shift 2 ;;
    --push) push=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) only+=("$1"); shift ;;
  esac
done
registry=${registry%/}
for s in "${only[@]}"; do
  [[ " ${STEPS[*]} " == *" $s "* ]] || { echo "build.sh: unknown step '$s' (expected one of: ${STEPS[*]})" >&2; exit 2; }
done
((${#only[@]})) && STEPS=("${only[@]}")

# version: the one source of truth is mdfnet/__init__.py (__version__ = "X.Y.Z")
version=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' "$root/mdfnet/__init__.py")
[[ -n "$version" ]] || { echo "build.sh: no __version__ = \"...\" line in $root/mdfnet/__init__.py" >&2; exit 1; }
git_sha=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
DOCKER=${DOCKER:-docker}

run() {
  if ((dry)); then printf '%q ' "$@"; echo; else "$@"; fi
}

ctx=$(mktemp -d "${TMPDIR:-/tmp}/mdfnet-image-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
tar -C "$root" --exclude='__pycache__' --exclude='*.pyc' -cf - pyproject.toml README.md mdfnet images/requirements \
  | tar -C "$ctx" -xf -

build() { # name base-arg dockerfile [docker build options...]
  local tag="$registry/mdfnet-$1:$version"
  local t0=$SECONDS
  run "$DOCKER" build --network host -f "$3" "${@:4}" --build-arg "BASE=$2" --build-arg "VERSION=$version" \
    --build-arg "MDFNET_GIT_SHA=$git_sha" -t "$tag" "$ctx"
  ((dry)) || echo "built $tag in $((SECONDS - t0)) s" >&2
  if ((push)); then run "$DOCKER" push "$tag"; fi
}

need_torch=0
for step in "${STEPS[@]}"; do [[ "${FROM_BASE[$step]}" == base-torch ]] && need_torch=1; done
build base "$base" "$here/base/Dockerfile" --target base
((need_torch)) && build base-torch "$base" "$here/base/Dockerfile" --target base-torch
for step in "${STEPS[@]}"; do
  build "$step" "$registry/mdfnet-${FROM_BASE[$step]}:$version" "$here/step/Dockerfile" \
    --build-arg "STEP=$step" --build-arg "IMPORTS=${IMPORTS[$step]}"
done
