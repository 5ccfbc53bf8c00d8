#!/usr/bin/env bash
# `make images`: build the component image, then the Triton image on top of it, and print their sizes.
# Env (all optional): IMAGE_REG, IMAGE_TAG, BASE_IMAGE (default: the pinned official python image when a registry
# answers, else the local debootstrap base from `make base-image`), WHEELS (a folder of wheels pip prefers; default:
# $PIP_FIND_LINKS, else pip's global.find-links, when it is a local folder, as pip here is configured), PIP_CERT (a
# CA bundle for pip, passed as a BuildKit secret: never stored in a layer), PY (the python that runs
# tests.containers.dockerd).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
IMAGE_REG=${IMAGE_REG:-ghcr.io/nemotron-asr-pipeline}
IMAGE_TAG=${IMAGE_TAG:-$(sed -nE 's/^COMPONENT_IMAGE = ".*:([^:"]+)"/\1/p' components/common/kfp_base.py)}
OFFICIAL_BASE=$(sed -nE 's/^ARG BASE_IMAGE=//p' infra/docker/Dockerfile.component)
LOCAL_BASE=$(infra/docker/base-image.sh --print-tag)
DOCKER_HOST=$("$PY" -m tests.containers.dockerd host) \
  || { echo "error: no Docker engine answers (DOCKER_HOST or the default socket); \`make docker-up\` starts one" >&2; exit 2; }
export DOCKER_HOST DOCKER_BUILDKIT=1
# BuildKit is needed for the secret and bind mounts. Docker >= 23 CLIs use the buildx plugin for it; without the
# plugin, Debian's docker.io 20.10 client (/usr/bin/docker) still has BuildKit built in.
docker=docker
if ! docker buildx version >/dev/null 2>&1 && [[ $(docker version -f '{{.Client.Version}}' 2>/dev/null) != 20.* ]] \
   && [[ -x /usr/bin/docker ]]; then docker=/usr/bin/docker; fi

if [[ -z ${BASE_IMAGE:-} ]]; then
  if "$docker" image inspect "$OFFICIAL_BASE" >/dev/null 2>&1 || timeout 60 "$docker" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    BASE_IMAGE=$OFFICIAL_BASE
  else
    echo "== $OFFICIAL_BASE cannot be pulled here: using the local base $LOCAL_BASE (make base-image)"
    "$docker" image inspect "$LOCAL_BASE" >/dev/null 2>&1 || infra/docker/base-image.sh "$LOCAL_BASE"
    BASE_IMAGE=$LOCAL_BASE
  fi
fi

WHEELS=${WHEELS-${PIP_FIND_LINKS:-$("$PY" -m pip config get global.find-links 2>/dev/null || true)}}
if [[ -n $WHEELS && -d $WHEELS ]]; then
  for w in "$WHEELS"/*.whl; do [[ -e $w ]] && { ln -f "$w" infra/docker/wheels/ 2>/dev/null || cp -f "$w" infra/docker/wheels/; }; done
fi
secret=()
PIP_CERT=${PIP_CERT:-$("$PY" -m pip config get global.cert 2>/dev/null || true)}
[[ -n $PIP_CERT && -s $PIP_CERT ]] && secret=(--secret "id=pip_cert,src=$PIP_CERT")
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[[ $commit != unknown && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && commit="$commit-dirty"

component=$IMAGE_REG/component:$IMAGE_TAG
triton=$IMAGE_REG/triton:$IMAGE_TAG
echo "== building $component and $triton (base $BASE_IMAGE, commit $commit, wheels: $(ls infra/docker/wheels/*.whl 2>/dev/null | wc -l))"
start=$(date +%s)
"$docker" build --network=host "${secret[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "GIT_COMMIT=$commit" \
  -f infra/docker/Dockerfile.component -t "$component" .
"$docker" build --network=host --build-arg "COMPONENT_IMAGE=$component" -f infra/docker/Dockerfile.triton -t "$triton" .
echo "== images built in $(( $(date +%s) - start )) s"
for img in "$component" "$triton"; do
  "$docker" image inspect -f '{{.Size}}' "$img" | awk -v i="$img" '{printf "   %-55s %5.2f GB\n", i, $1/1e9}'
done
