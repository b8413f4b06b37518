//! The Debian package: built with `cargo deb` (cargo install cargo-deb), then
//! read back with dpkg-deb. Its files must be where the unit file and the
//! default configuration expect them.

mod support;

use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn the_debian_package_installs_the_files_where_the_unit_expects_them() {
    let root = support::repo_path("");
    let out = Command::new(env!("CARGO")).args(["deb", "--version"]).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "this test needs cargo-deb: cargo install cargo-deb (.ci/run installs it)");
    let built = run(Command::new(env!("CARGO")).args(["deb"]).current_dir(&root));
    let deb = built
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("no .deb path in cargo deb's output:\n{built}"))
        .to_string();

    let files = run(Command::new("dpkg-deb").args(["-c", &deb]));
    for path in [
        "./usr/bin/lineguard",
        "./etc/lineguard/lineguard.toml",
        "./usr/share/lineguard/models/line-mlp.onnx",
        "./usr/share/lineguard/models/line-mlp.toml",
        "./usr/share/lineguard/grafana-lineguard.json",
        "./usr/share/doc/lineguard/README.md",
        "lib/systemd/system/lineguard.service",
    ] {
        assert!(files.contains(path), "{path} not in the package:\n{files}");
    }

    // The unit runs what the package installs, with the config it installs,
    // and the config names the model the package installs.
    let unit = std::fs::read_to_string(root.join("systemd/lineguard.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/lineguard run --config /etc/lineguard/lineguard.toml"));
    let config = std::fs::read_to_string(root.join("deploy/lineguard.toml")).unwrap();
    assert!(config.contains("model = \"/usr/share/lineguard/models/line-mlp.onnx\""));

    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").args(["-e", &deb, dir.path().to_str().unwrap()]));
    let conffiles = std::fs::read_to_string(dir.path().join("conffiles")).unwrap();
    assert!(conffiles.contains("/etc/lineguard/lineguard.toml"), "config is a conffile: {conffiles}");
    let postinst = std::fs::read_to_string(dir.path().join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(postinst.contains("/etc/lineguard/mqtt-password"), "{postinst}");
    assert!(
        postinst.contains("systemctl") || postinst.contains("deb-systemd-helper"),
        "unit enabled: {postinst}"
    );
    let control = std::fs::read_to_string(dir.path().join("control")).unwrap();
    assert!(control.contains("Package: lineguard") && control.contains("adduser"), "{control}");
}
