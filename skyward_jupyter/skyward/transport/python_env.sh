# Bootstrap phase "python": find an interpreter with the kernel's major.minor (WANT) and
# make the venv the agent and the cells run in. Prints SKYWARD_HOME for the agent phase.
set -e
cd ~
want="$WANT"
check="import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$want')"
py=""
for p in "python$want" python3 python; do
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
if [ ! -x .skyward/venv/bin/python ] || ! .skyward/venv/bin/python -c "$check"; then
  rm -rf .skyward/venv
  "$py" -m venv --system-site-packages --without-pip .skyward/venv
fi
echo "python: $py ($("$py" --version 2>&1))"
echo "SKYWARD_HOME=$HOME"
