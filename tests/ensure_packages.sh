#!/usr/bin/env bash
# Install what the integration tests need from Debian's packages when it is missing: nginx
# (a repository needs nothing but a static file server), PostgreSQL (the fleet collector's
# shared database), Chromium (the collector's dashboard is tested in a real headless
# browser) and systemd (the systemd backend runs on a private user manager). Without root or
# apt, say so and leave it to the tests (they skip, with the reason, or fail under CI).
set -u
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/lib/systemd/systemd ] || missing+=(systemd)
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) for the integration tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "${missing[*]} missing and cannot be installed here (need root and apt-get)" >&2
fi
exit 0
