#!/usr/bin/env bash
# Installer for espnet_speechclip: Debian packages the recipes need, a virtual environment with
# the pinned Python packages, and the plugin itself (editable).
#
# Usage: tools/install.sh [--venv DIR] [--python PY] [--no-apt]
#   --venv DIR     where the virtual environment goes (default: tools/venv, or $SPEECHCLIP_VENV)
#   --python PY    interpreter to build it from (default: python3.12 found on PATH or under pyenv)
#   --no-apt       skip the Debian packages (espeak-ng, sox)
# Idempotent: a second run with unchanged pins (tools/requirements.txt, setup.py) does nothing.
set -euo pipefail

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$tools_dir")
venv=${SPEECHCLIP_VENV:-$tools_dir/venv}
python=""
do_apt=true

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --no-apt) do_apt=false; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (install.sh) $*"; }

if $do_apt; then
    missing=()
    for pkg in espeak-ng libespeak-ng1 sox libsox-fmt-all; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        log "Debian packages present"
    fi
fi

if [ -z "$python" ]; then
    if command -v python3.12 >/dev/null 2>&1 && python3.12 --version >/dev/null 2>&1; then
        python=python3.12
    else
        python=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3.12 2>/dev/null | tail -n 1 || true)
    fi
    [ -n "$python" ] || { echo "install.sh: Python 3.12 not found; pass --python" >&2; exit 1; }
fi

# The stamp records exactly what was installed; unchanged inputs mean nothing to do.
stamp_inputs=$(cat "$tools_dir/requirements.txt" "$repo_dir/setup.py"; "$python" --version)
stamp=$(printf '%s' "$stamp_inputs" | sha256sum | cut -d' ' -f1)
if [ -f "$venv/.speechclip_stamp" ] && [ "$(cat "$venv/.speechclip_stamp")" = "$stamp" ]; then
    log "venv $venv is up to date"
    exit 0
fi

# A new venv takes ~5.9 GB (CUDA torch wheels from PyPI); pip dies half-way with ENOSPC otherwise.
need_gb=7
mkdir -p "$(dirname "$venv")"
free_kb=$(df -Pk "$(dirname "$venv")" | awk 'NR == 2 {print $4}')
if [ ! -x "$venv/bin/python" ] && [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "install.sh: only $((free_kb / 1024)) MB free on the disk of $(dirname "$venv");" \
        "the environment needs about ${need_gb} GB. Free some space or pass --venv DIR on a larger disk." >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    log "creating venv $venv with $("$python" --version)"
    "$python" -m venv "$venv"
fi
log "installing pinned packages (first time: several minutes, ~5.5 GB)"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$tools_dir/requirements.txt"
"$venv/bin/pip" install -q --no-deps -e "$repo_dir"
echo "$stamp" > "$venv/.speechclip_stamp"
log "done: activate with  . $venv/bin/activate"
