# path.sh: environment for the recipes (sourced by speechclip.sh).
# MAIN_ROOT is the repository; its tools/venv (tools/install.sh) provides Python and the packages.
MAIN_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && cd ../../.. && pwd)
export MAIN_ROOT
venv=${SPEECHCLIP_VENV:-${MAIN_ROOT}/tools/venv}
if [ ! -x "${venv}/bin/python" ]; then
    echo "path.sh: no virtual environment at ${venv}: run ${MAIN_ROOT}/tools/install.sh first" >&2
    return 1 2>/dev/null || exit 1
fi
export PATH="${venv}/bin:${PATH}"
# A user's Kaldi (KALDI_ROOT) puts its utils/ on PATH after ours, for the other Kaldi tools it has.
if [ -n "${KALDI_ROOT:-}" ] && [ -d "${KALDI_ROOT}/egs/wsj/s5/utils" ]; then
    export PATH="${PATH}:${KALDI_ROOT}/egs/wsj/s5/utils"
fi
export PYTHONIOENCODING=UTF-8
export LC_ALL=C
