# Shared by hack/image/*.sh: which tool builds and runs images.
#
# IMAGE_TOOL    podman, buildah or docker; default: the first available of
#               podman, buildah, docker (docker only when its engine answers)
# PODMAN_FLAGS  extra global podman flags, e.g. --storage-driver=vfs where
#               overlay storage does not work (a store keeps the driver it was
#               created with; `podman system reset` starts one afresh)

image_tool() {
  if [ -n "${IMAGE_TOOL:-}" ]; then
    echo "$IMAGE_TOOL"
    return
  fi
  if command -v podman >/dev/null; then
    echo podman
  elif command -v buildah >/dev/null; then
    echo buildah
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo docker
  else
    echo "no image tool: install podman and runc (apt-get install podman runc), or buildah, or run a Docker engine" >&2
    return 1
  fi
}

# tool ARGS...: the chosen tool, with PODMAN_FLAGS for podman.
tool() {
  local t
  t=$(image_tool) || return 1
  if [ "$t" = podman ]; then
    # shellcheck disable=SC2086 # PODMAN_FLAGS is a list of flags
    podman ${PODMAN_FLAGS:-} "$@"
  else
    "$t" "$@"
  fi
}
