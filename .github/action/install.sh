#!/usr/bin/env bash
# The action's install step: puts fhirgen in a directory of its own and names it in the step
# output `bin`: the release binary for this runner, checked against the release's SHA256SUMS,
# or (build-from-source: true) built from the action's own checkout with the locked dependencies.
set -euo pipefail

dest="${RUNNER_TEMP:?}/fhirgen"
mkdir -p "$dest/bin"

if [[ ${INPUT_BUILD_FROM_SOURCE:-false} == true ]]; then
  cargo install --locked --path "${ACTION_PATH:?}" --root "$dest"
  echo "bin=$dest/bin/fhirgen" >>"${GITHUB_OUTPUT:?}"
  exit 0
fi

case "${RUNNER_OS:-}-${RUNNER_ARCH:-}" in
  Linux-X64) triple=x86_64-unknown-linux-musl ;;
  Linux-ARM64) triple=aarch64-unknown-linux-musl ;;
  macOS-ARM64) triple=aarch64-apple-darwin ;;
  *)
    echo "::error title=fhirgen::no release binary for ${RUNNER_OS:-?} ${RUNNER_ARCH:-?}; set build-from-source: true"
    exit 1
    ;;
esac

# By default the release the action itself was pinned to (uses: owner/fhirgen@v1.2.3).
version=${INPUT_VERSION:-}
if [[ -z $version ]]; then
  if [[ ${ACTION_REF:-} == v[0-9]* ]]; then version=$ACTION_REF; else version=latest; fi
fi
# FHIRGEN_RELEASES_URL points at a mirror of the releases page (and at the tests' stand-in).
releases=${FHIRGEN_RELEASES_URL:-https://github.com/${ACTION_REPOSITORY:-fhirgen/fhirgen}/releases}
if [[ $version == latest ]]; then
  releases="$releases/latest/download"
else
  releases="$releases/download/$version"
fi

archive="fhirgen-$triple.tar.gz"
cd "$dest"
curl -fsSL --retry 3 -o "$archive" "$releases/$archive"
curl -fsSL --retry 3 -o SHA256SUMS "$releases/SHA256SUMS"
grep " $archive\$" SHA256SUMS >"$archive.sha256" ||
  { echo "::error title=fhirgen::$archive is not in the release's SHA256SUMS"; exit 1; }
if command -v sha256sum >/dev/null; then
  sha256sum -c "$archive.sha256"
else
  shasum -a 256 -c "$archive.sha256"
fi
tar -xzf "$archive" -C bin fhirgen
"$dest/bin/fhirgen" --version
echo "bin=$dest/bin/fhirgen" >>"${GITHUB_OUTPUT:?}"
