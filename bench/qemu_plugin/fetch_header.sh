#!/usr/bin/env bash
# Fetch qemu-plugin.h for the installed QEMU from Debian's qemu source package.
# No binary Debian package ships the header. We use a private apt state under $1 so the
# machine's apt sources are left untouched; the deb-src entries mirror the system's deb ones.
set -euo pipefail
dest=$(realpath -m "${1:?usage: fetch_header.sh DEST_DIR}")
mkdir -p "$dest/lists/partial" "$dest/cache/archives/partial"
[ -f "$dest/qemu-plugin.h" ] && exit 0
version=$(dpkg-query -W -f='${Version}' qemu-system-arm)
source_version=${version%+b*}  # binNMU suffix (+bN) is not part of the source version
{
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && grep -E '^deb ' "$f" | sed 's/^deb /deb-src /'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && awk '
      /^Types:/ {types=$0} /^URIs:/ {uris=$2} /^Suites:/ {$1=""; suites=$0} /^Components:/ {$1=""; comps=$0}
      /^Signed-By:/ {key=$2}
      /^$/ {flush()} END {flush()}
      function flush() { if (types ~ /deb/ && uris != "") { n=split(suites, s, " "); for (i=1;i<=n;i++) printf "deb-src [signed-by=%s] %s %s%s\n", key, uris, s[i], comps }; types=""; uris=""; suites=""; comps=""; key="" }' "$f"
  done
} | sort -u > "$dest/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$dest/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$dest/lists" -o "Dir::Cache=$dest/cache" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq
(cd "$dest" && apt-get "${apt_opts[@]}" source --download-only -qq "qemu=$source_version")
tar -xJf "$dest"/qemu_*.orig.tar.xz -C "$dest" --wildcards --strip-components=3 '*/include/qemu/qemu-plugin.h'
rm -rf "$dest"/qemu_* "$dest/lists" "$dest/cache"
echo "fetched qemu-plugin.h for qemu $source_version"
