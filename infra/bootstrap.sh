#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: Debian packages, then a Python 3.12 venv in .venv.
# Usage: infra/bootstrap.sh [run|test]   (test also installs the browser and the dev tools)
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-run}

debian_packages=(espeak-ng ffmpeg)
[[ $purpose == test ]] && debian_packages+=(chromium fonts-noto-core)

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

find_python312() {
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    command -v python3.12; return
  fi
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [[ -x $candidate ]] && { echo "$candidate"; return; }
  done
  echo "no Python 3.12 found (hazm 0.12 needs it): install python3.12 or pyenv's 3.12" >&2
  exit 1
}

if [[ ! -x .venv/bin/python ]]; then
  python312=$(find_python312)
  echo "creating .venv with $python312"
  "$python312" -m venv .venv
fi

hash=$(sha1sum pyproject.toml | cut -c1-12)
# a test install (with the dev tools) also serves `make run`
if [[ -f .venv/.installed-$hash-test || -f .venv/.installed-$hash-$purpose ]]; then exit 0; fi
extras=""; [[ $purpose == test ]] && extras="[dev]"
echo "installing Python packages into .venv"
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras" >.venv/pip.log 2>&1; then
  grep -v "^WARNING: Location" .venv/pip.log | tail -n 30 >&2
  echo "pip install failed (full log: .venv/pip.log)" >&2
  exit 1
fi
.venv/bin/python -c "import hazm, av, cv2, dlib, confluent_kafka, onnxruntime, psycopg, fastapi" \
  || { echo "the Python install is incomplete" >&2; exit 1; }
rm -f .venv/.installed-*
touch ".venv/.installed-$hash-$purpose"
