# Sourced by scripts/test after _venv.sh (in the repository root): what the Apache Kafka broker
# of the tests needs, installed when missing, and the broker's jars assembled once.
#   java   Debian openjdk-17-jre-headless (Kafka 4.x needs Java 17 or later)
#   mvn    Debian maven (copies the broker's jars from Maven Central, see
#          stream_router/sandbox/kafka/pom.xml)
#   kcat   Debian kcat (a consumer the project did not write, for the codec tests)
# A tool that cannot be installed fails the run here: the suite never skips the real broker.
broker_packages=()
command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ] \
  || broker_packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || broker_packages+=(maven)
command -v kcat >/dev/null 2>&1 || broker_packages+=(kcat)
if [ "${#broker_packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test: missing ${broker_packages[*]}; install them (Debian package names)" >&2
    exit 1
  fi
  echo "installing ${broker_packages[*]} (Debian)" >&2
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "${broker_packages[@]}" >/dev/null
fi
# Assemble the broker now (about 30 s the first time), not inside the first test's timeout.
.venv/bin/python -m stream_router.sandbox.kafka
