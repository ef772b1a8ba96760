#!/usr/bin/env bash
# Builds the example reward plugins (plugins/examples/, one rule in three
# languages) into target/plugins/example-{rust,python,js}-reward.wasm.
#
#   scripts/build-example-plugins.sh [rust|python|js|all]    (default: all)
#
# Tool-chains come from the registries only and stay inside the checkout:
#   rust:   cargo, target wasm32-wasip2 (scripts/setup.sh installs it)
#   python: componentize-py from PyPI in the virtualenv .venv-plugins-py
#   js:     @bytecodealliance/componentize-js (+ jco) from npm, in
#           plugins/examples/js-reward/node_modules (versions in package-lock.json)
# Idempotent: a component is rebuilt only when one of its inputs (sources,
# WIT, tool-chain pins) is newer than it; a finished build is moved into place
# in one step, so an interrupted build never looks up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPONENTIZE_PY_VERSION=0.25.1
target_dir=${CARGO_TARGET_DIR:-target}
out=target/plugins
wit=wit/v0.1.0
mkdir -p "$out"

# True when $1 is missing or any later argument (file or directory) has a newer file.
stale() {
    local artifact=$1
    shift
    [ -f "$artifact" ] || return 0
    [ -n "$(find "$@" -type f -newer "$artifact" -print -quit)" ]
}

build_rust() {
    local pkg=example-rust-reward
    cargo build --quiet --profile wasm --target wasm32-wasip2 -p "$pkg"
    local src="$target_dir/wasm32-wasip2/wasm/${pkg//-/_}.wasm"
    cmp -s "$src" "$out/$pkg.wasm" || cp "$src" "$out/$pkg.wasm"
}

build_python() {
    local dir=plugins/examples/python-reward dest=$out/example-python-reward.wasm
    local venv=.venv-plugins-py
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("componentize-py"))' 2>/dev/null || true)
    if [ "$have" != "$COMPONENTIZE_PY_VERSION" ]; then
        "$venv/bin/pip" install --disable-pip-version-check -q "componentize-py==$COMPONENTIZE_PY_VERSION"
        touch "$venv/.componentize-py-installed"
    fi
    [ -f "$venv/.componentize-py-installed" ] || touch "$venv/.componentize-py-installed"
    if stale "$dest" "$dir" "$wit" "$venv/.componentize-py-installed"; then
        "$venv/bin/componentize-py" -d "$wit" -w reward-plugin componentize \
            -p "$dir" app -o "$dest.tmp" >/dev/null
        mv "$dest.tmp" "$dest"
    fi
}

build_js() {
    local dir=plugins/examples/js-reward dest=$out/example-js-reward.wasm
    if ! command -v npm >/dev/null; then
        echo "error: the JavaScript example needs Node.js 18+ with npm (apt-get install nodejs npm)" >&2
        return 1
    fi
    # npm ci installs exactly package-lock.json; redo it when the lock changes.
    if stale "$dir/node_modules/.package-lock.json" "$dir/package-lock.json"; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
    if stale "$dest" "$dir/reward.js" "$dir/numeric-r1.js" "$dir/package-lock.json" "$wit"; then
        # No fetch/HTTP: the host links WASI without wasi:http, and a reward
        # rule has no business on the network.
        (cd "$dir" && node_modules/.bin/componentize-js reward.js \
            --wit "../../../$wit" --world-name reward-plugin \
            --disable http fetch-event -o "../../../$dest.tmp" >/dev/null)
        mv "$dest.tmp" "$dest"
    fi
}

what=${1:-all}
case "$what" in
    rust | python | js) "build_$what" ;;
    all)
        build_rust
        build_python
        build_js
        ;;
    *)
        echo "usage: $0 [rust|python|js|all]" >&2
        exit 2
        ;;
esac
for f in "$out"/example-*-reward.wasm; do
    if [ -f "$f" ]; then printf '%-44s %9d bytes\n' "$f" "$(stat -c %s "$f")"; fi
done
