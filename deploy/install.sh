#!/usr/bin/env bash
# Install lineguard on a systemd distribution without dpkg (Debian and Ubuntu:
# use the .deb from `cargo deb`). Run as root from the source tree after
# `cargo build --release`, or pass the binary: deploy/install.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/lineguard}"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$bin" ] || { echo "no binary at $bin: cargo build --release first" >&2; exit 1; }

install -D -m 0755 "$bin" /usr/bin/lineguard
install -d -m 0755 /etc/lineguard /usr/share/lineguard/models /usr/share/doc/lineguard
# Never overwrite an edited configuration.
[ -e /etc/lineguard/lineguard.toml ] || install -m 0644 deploy/lineguard.toml /etc/lineguard/lineguard.toml
[ -e /etc/lineguard/mqtt-password ] || install -m 0600 /dev/null /etc/lineguard/mqtt-password
install -m 0644 models/line-mlp.onnx models/line-mlp.toml models/line-ae.onnx models/line-ae.toml /usr/share/lineguard/models/
install -m 0644 README.md /usr/share/doc/lineguard/README.md
install -m 0644 deploy/grafana-lineguard.json /usr/share/lineguard/
install -d -m 0755 /usr/share/man/man1
for page in deploy/man/*.1; do gzip -9nc "$page" > "/usr/share/man/man1/$(basename "$page").gz"; done
install -D -m 0644 deploy/completions/lineguard.bash /usr/share/bash-completion/completions/lineguard
install -D -m 0644 deploy/completions/_lineguard /usr/share/zsh/vendor-completions/_lineguard
install -D -m 0644 deploy/completions/lineguard.fish /usr/share/fish/vendor_completions.d/lineguard.fish
install -D -m 0644 systemd/lineguard.service /etc/systemd/system/lineguard.service
if ! getent passwd lineguard >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/lineguard --shell /usr/sbin/nologin lineguard
fi
/usr/bin/lineguard check-config --config /etc/lineguard/lineguard.toml >/dev/null \
  || echo "note: edit /etc/lineguard/lineguard.toml, then: lineguard check-config" >&2
systemctl daemon-reload 2>/dev/null || true
echo "installed; start with: systemctl enable --now lineguard"
