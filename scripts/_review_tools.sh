# Sourced by scripts/test after _venv.sh (in the repository root): what the Label Studio tests
# need, installed when missing.
#   chromium  Debian chromium (the browser test drives it with Playwright; no browser download)
#   Label Studio  into its own environment under the cache folder, from the pinned
#             stream_router/sandbox/labelstudio/requirements.txt (about a minute, once)
# A tool that cannot be installed fails the run here: the suite never skips them.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test: missing chromium; install it (Debian package chromium)" >&2
    exit 1
  fi
  echo "installing chromium (Debian)" >&2
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends chromium >/dev/null
fi
# Install Label Studio now, not inside the first test's timeout.
.venv/bin/python -m stream_router.sandbox.labelstudio.server install
