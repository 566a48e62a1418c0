#!/usr/bin/env bash
# Runs docker-py's own integration tests (those of containers, exec and
# images) against the daemon that DOCKER_HOST names.
#
#   DOCKER_HOST=unix:///run/hull/hull.sock scripts/docker-py-suite.sh [PYTEST-ARGS...]
#
# The tests ship in the sdist of `docker` on PyPI; they are fetched here, at
# test time, never kept in this repository. The sdist and a venv holding
# pytest and the library's dependencies are cached under
# ${HULL_CACHE:-~/.cache/hull}/docker-py-VERSION and remade whenever missing.
# The tests that need the internet are deselected by
# crates/hull/tests/clients/docker_py_deselected.txt (one test id and its
# reason a line). Prints pytest's report, with the slowest tests (where CI's
# time goes); its exit status is pytest's.
set -euo pipefail

version=6.1.3
here=$(cd "$(dirname "$0")/.." && pwd)
deselected=$here/crates/hull/tests/clients/docker_py_deselected.txt
cache=${HULL_CACHE:-$HOME/.cache/hull}/docker-py-$version
timeout=${DOCKER_PY_TIMEOUT:-90}
: "${DOCKER_HOST:?DOCKER_HOST must name the daemon under test}"

mkdir -p "$cache"
# Each piece is made in a scratch directory and renamed into place, so an
# interrupted run leaves no half-made cache behind.
if [ ! -x "$cache/venv/bin/pytest" ]; then
    echo "making a venv for docker-py's tests in $cache/venv" >&2
    rm -rf "$cache/venv.new"
    python3 -m venv "$cache/venv.new"
    # The versions of docker-py's own test-requirements.txt; requests 2.32
    # broke docker-py 6's unix socket adapter.
    "$cache/venv.new/bin/pip" install -q "pytest==7.1.2" "pytest-timeout==2.1.0" \
        "requests==2.28.1" "urllib3==1.26.11" "websocket-client==1.3.3" \
        "packaging==21.3" "paramiko==2.11.0" >&2
    rm -rf "$cache/venv"
    # A venv's scripts name its path: rename, then fix the shebangs.
    mv "$cache/venv.new" "$cache/venv"
    sed -i "1s|$cache/venv.new|$cache/venv|" "$cache/venv/bin/"* 2>/dev/null || true
    sed -i "s|$cache/venv.new|$cache/venv|g" "$cache/venv/pyvenv.cfg" \
        "$cache/venv/bin/activate" 2>/dev/null || true
fi
sdist=$cache/docker-$version.tar.gz
if [ ! -s "$sdist" ]; then
    echo "fetching the sdist of docker $version" >&2
    rm -rf "$cache/download"
    mkdir "$cache/download"
    python3 -m pip download -q --no-binary :all: --no-deps "docker==$version" \
        -d "$cache/download" >&2
    mv "$cache/download/docker-$version.tar.gz" "$sdist"
    rm -rf "$cache/download"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/docker-py-suite.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
tar -xzf "$sdist" -C "$work"
cd "$work/docker-$version"

args=()
while read -r id _; do
    case $id in
        "" | "#"*) ;;
        *) args+=(--deselect "$id") ;;
    esac
done <"$deselected"

# The tests import the sdist's own `docker` package (it sits at the top of
# the rootdir); one test at a time, each with a deadline.
"$cache/venv/bin/python" -m pytest -p no:cacheprovider --timeout "$timeout" -rfE \
    --durations=40 \
    "${args[@]}" \
    tests/integration/api_container_test.py \
    tests/integration/api_exec_test.py \
    tests/integration/api_image_test.py \
    tests/integration/models_containers_test.py \
    "$@"
