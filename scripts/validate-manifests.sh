#!/usr/bin/env bash
# Validates the Kubernetes manifests (deploy/kubernetes/*.yaml) offline and strictly, as
# the test command's step before the compose stack. No cluster is needed.
#
#   scripts/validate-manifests.sh            # every manifest, then the self-test
#   scripts/validate-manifests.sh FILE...    # these files only (no self-test)
#
# - Kubernetes kinds: against the JSON schemas that kubernetes-validate ships, for Kubernetes
#   $K8S_VERSION, with --strict (an unknown field is an error);
# - KEDA kinds (ScaledObject, TriggerAuthentication): against the openAPIV3Schema of KEDA's
#   CRDs committed in deploy/kubernetes/schemas/ (source and version noted there), made
#   strict the same way, with python jsonschema;
# - the kustomization lists every manifest; no Secret object and no literal password, token,
#   cookie or broker URL in a container's environment.
# Then the self-test: each file of deploy/kubernetes/tests/invalid/ (a typo'd field, a wrong
# type, a missing required field, a literal token, a Secret) must be rejected.
# Prints one line per file checked; exits non-zero if a manifest is invalid or an invalid
# one is accepted. The Python packages are installed once, at pinned versions, in a virtual
# environment (VALIDATE_MANIFESTS_VENV, default ~/.cache/taskplatform/validate-manifests-venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

K8S_VERSION=1.34.0
packages=(kubernetes-validate==1.34.1 jsonschema==4.26.0 PyYAML==6.0.4)
# Their dependencies, pinned too (the versions pip chose for the three above).
dependencies=(attrs==26.1.0 importlib_resources==7.1.0 jsonschema-specifications==2025.9.1
  packaging==26.4 referencing==0.37.0 rpds-py==2026.9.1 typing_extensions==4.16.0)
venv=${VALIDATE_MANIFESTS_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/taskplatform/validate-manifests-venv}
manifests_dir=deploy/kubernetes
schemas_dir=$manifests_dir/schemas

log() { printf '[validate-manifests] %s\n' "$*" >&2; }
die() { printf '[validate-manifests] FAILED: %s\n' "$*" >&2; exit 1; }

# --- the pinned packages, in their own virtual environment
installed_ok() {
  [ -x "$venv/bin/python" ] || return 1
  local spec name version
  for spec in "${packages[@]}"; do
    name=${spec%%==*} version=${spec##*==}
    [ "$("$venv/bin/python" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$name" 2>/dev/null)" = "$version" ] \
      || return 1
  done
}
if ! installed_ok; then
  command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-venv)"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    command -v apt-get >/dev/null || die "python3's venv module is missing"
    log "installing python3-venv (Debian package)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  log "installing ${packages[*]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv $venv failed"
  "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}" "${dependencies[@]}" \
    || die "pip install ${packages[*]} failed"
  installed_ok || die "the packages in $venv are not at the pinned versions"
fi
validate() { "$venv/bin/python" scripts/validate_manifests.py --k8s-version "$K8S_VERSION" --schemas "$schemas_dir" "$@"; }

# --- the manifests
if [ $# -gt 0 ]; then
  validate "$@"
  exit
fi
shopt -s nullglob
files=("$manifests_dir"/*.yaml)
[ ${#files[@]} -gt 0 ] || die "no manifest in $manifests_dir"
validate "${files[@]}" || die "invalid manifests (above)"

# --- the self-test: the validator must reject each broken manifest
invalid=("$manifests_dir"/tests/invalid/*.yaml)
[ ${#invalid[@]} -gt 0 ] || die "no broken manifest in $manifests_dir/tests/invalid for the self-test"
for f in "${invalid[@]}"; do
  if out=$(validate "$f" 2>&1); then
    printf '%s\n' "$out"
    die "$f was accepted: the validator lets a broken manifest through"
  fi
  reason=$(printf '%s\n' "$out" | sed -n 2p | sed 's/^ *//')
  [ -n "$reason" ] || die "$f: the validator failed without saying why: $out"
  printf 'ok   %s rejected as expected: %s\n' "$f" "$reason"
done
log "${#files[@]} manifests valid (Kubernetes $K8S_VERSION, strict; KEDA CRDs from $schemas_dir), ${#invalid[@]} broken ones rejected"
