# Bootstrap phase "python": find an interpreter with the kernel's major.minor (WANT), make
# sure uv is at hand, and make the venv the agent and the cells run in. Prints
# SKYWARD_HOME and SKYWARD_UV for the later phases.
set -e
cd ~
want="$WANT"
check="import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$want')"
py=""
for p in ${PYTHON:+"$PYTHON"} "python$want" python3 python; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c "$check" 2>/dev/null; then
    py=$(command -v "$p")
    break
  fi
done
if [ -z "$py" ]; then
  found=$(python3 --version 2>&1 || echo none)
  echo "no Python $want on this instance (python3: $found);" \
    "the instance's Python must match the kernel's major.minor" >&2
  exit 3
fi
mkdir -p .skyward
uv=$(command -v uv || true)
if [ -z "$uv" ] && [ -x .skyward/uv/bin/uv ]; then
  uv=$HOME/.skyward/uv/bin/uv
fi
if [ -z "$uv" ]; then
  echo "installing uv (pip install uv)"
  if "$py" -m pip --version >/dev/null 2>&1; then
    "$py" -m pip install --quiet --disable-pip-version-check --target .skyward/uv uv
  elif command -v curl >/dev/null 2>&1; then
    curl -LsSf https://astral.sh/uv/install.sh | env UV_INSTALL_DIR="$HOME/.skyward/uv/bin" \
      UV_NO_MODIFY_PATH=1 sh
  fi
  [ -x .skyward/uv/bin/uv ] || { echo "could not install uv: no pip and no curl" >&2; exit 4; }
  uv=$HOME/.skyward/uv/bin/uv
fi
if [ ! -x .skyward/venv/bin/python ] || ! .skyward/venv/bin/python -c "$check"; then
  rm -rf .skyward/venv
  # the seed (pip) comes from the index; from uv's cache alone when the index fails
  "$uv" venv --quiet --python "$py" --system-site-packages --seed .skyward/venv ||
    "$uv" venv --quiet --clear --offline --python "$py" --system-site-packages --seed .skyward/venv
fi
echo "python: $py ($("$py" --version 2>&1)); uv: $uv ($("$uv" --version 2>&1))"
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
echo "SKYWARD_GPUS=${gpus:-0}"
echo "SKYWARD_BASE_TORCH=$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
echo "SKYWARD_HOME=$HOME"
echo "SKYWARD_UV=$uv"
