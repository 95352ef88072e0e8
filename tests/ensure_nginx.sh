#!/usr/bin/env bash
# Install nginx from Debian's packages when it is missing, so that the integration tests can
# prove a repository needs nothing but a static file server. Without root or apt, say so and
# leave it to the tests (they skip nginx, or fail under CI).
set -u
command -v nginx >/dev/null 2>&1 && exit 0
[ -x /usr/sbin/nginx ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing nginx (Debian package) for the integration tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends nginx >/dev/null
else
  echo "nginx missing and cannot be installed here (need root and apt-get)" >&2
fi
exit 0
