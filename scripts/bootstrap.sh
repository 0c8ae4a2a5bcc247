#!/usr/bin/env bash
# Install everything sgpfab and its sandbox fleet need on a fresh Debian 12 machine (as root):
# apt packages, uv (pinned, into .cache/tools when it is not on PATH) and the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openssh-client rsync systemd-container debootstrap mmdebstrap iproute2 curl ca-certificates python3-venv)
UV_VERSION=0.13.9

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v uv >/dev/null 2>&1; then
  UV=$(command -v uv)
else
  UV=.cache/tools/bin/uv
  if [ ! -x "$UV" ]; then
    echo "bootstrap: installing uv $UV_VERSION into .cache/tools"
    python3 -m venv .cache/tools
    .cache/tools/bin/pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  fi
fi

"$UV" sync --frozen --quiet
echo "bootstrap: ready ($("$UV" --version), $(.venv/bin/fab --version | head -1))"
