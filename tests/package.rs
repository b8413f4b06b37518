//! The Debian package, as a gateway gets it: built by cargo-deb (through
//! `deploy/build-deb.sh`), read back with dpkg-deb, checked by lintian, then
//! installed, run and purged on this machine with dpkg.
//!
//! The build uses the `package-test` profile: the release profile's code
//! without its fat LTO, so that a change costs a quick rebuild rather than a
//! ten-minute link (the package's contents and scripts are the same).
//!
//! Ignored by a plain `cargo test` (it builds the package, a second cargo
//! build, and installs it with dpkg): `tests/run` runs it, and so CI; by
//! hand, `cargo test --test package -- --ignored`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn need(tool: &str, package: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
    assert!(
        found.status.success(),
        "this test needs {tool} (Debian: package {package}; `tests/run` installs it)"
    );
}

/// The package, built once for all tests here.
fn package() -> &'static PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let root = support::repo_path("");
        let out = Command::new(env!("CARGO")).args(["deb", "--version"]).current_dir(&root).output().unwrap();
        assert!(
            out.status.success(),
            "this test needs cargo-deb: cargo install cargo-deb (`tests/run` installs it)"
        );
        need("objcopy", "binutils");
        let built = run(Command::new(root.join("deploy/build-deb.sh"))
            .args(["--profile", "package-test"])
            .current_dir(&root)
            .env("CARGO", env!("CARGO")));
        let deb = built
            .lines()
            .map(str::trim)
            .rfind(|l| l.ends_with(".deb"))
            .unwrap_or_else(|| panic!("no .deb path in cargo deb's output:\n{built}"));
        PathBuf::from(deb)
    })
}

fn deb() -> String {
    package().display().to_string()
}

#[test]
#[ignore = "builds, installs and purges the Debian package (a second cargo build): `tests/run` runs it"]
fn the_debian_package_installs_the_files_where_the_unit_expects_them() {
    let root = support::repo_path("");
    let deb = deb();
    let files = run(Command::new("dpkg-deb").args(["-c", &deb]));
    for path in [
        "./usr/bin/lineguard",
        "./etc/lineguard/lineguard.toml",
        "./usr/share/lineguard/models/line-mlp.onnx",
        "./usr/share/lineguard/models/line-mlp.toml",
        "./usr/share/lineguard/models/line-ae.onnx",
        "./usr/share/lineguard/models/line-ae.toml",
        "./usr/share/lineguard/grafana-lineguard.json",
        "./usr/share/doc/lineguard/README.md",
        "./usr/share/doc/lineguard/copyright",
        "./usr/share/doc/lineguard/changelog.Debian.gz",
        "./usr/share/man/man1/lineguard.1.gz",
        "./usr/share/man/man1/lineguard-run.1.gz",
        "./usr/share/man/man1/lineguard-check-config.1.gz",
        "./usr/share/bash-completion/completions/lineguard",
        "./usr/share/zsh/vendor-completions/_lineguard",
        "./usr/share/fish/vendor_completions.d/lineguard.fish",
        "lib/systemd/system/lineguard.service",
    ] {
        assert!(files.contains(path), "{path} not in the package:\n{files}");
    }
    assert!(!files.contains("/usr/lib/debug"), "debug symbols belong in the -dbgsym package:\n{files}");

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
    assert!(postinst.contains("deb-systemd-helper"), "unit enabled: {postinst}");
    let control = std::fs::read_to_string(dir.path().join("control")).unwrap();
    assert!(control.contains("Package: lineguard") && control.contains("adduser"), "{control}");

    // Small enough for a 512 MB gateway: the README says how small.
    let kib: u64 = control
        .lines()
        .find_map(|l| l.strip_prefix("Installed-Size: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Installed-Size:\n{control}"));
    assert!(kib < 40 * 1024, "installed size {kib} KiB, over 40 MiB");

    // Stripped: no symbol table, no DWARF.
    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").args(["-x", &deb, unpacked.path().to_str().unwrap()]));
    let sections = run(Command::new("readelf").arg("-S").arg(unpacked.path().join("usr/bin/lineguard")));
    for s in [".symtab", ".debug_info", ".debug_line"] {
        assert!(!sections.contains(s), "the installed binary has {s}");
    }
    // The man page is the command line's.
    let man = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        unpacked.path().join("usr/share/man/man1/lineguard-run.1.gz").display()
    )));
    assert!(man.contains("configuration file"), "{man}");
}

#[test]
#[ignore = "builds, installs and purges the Debian package (a second cargo build): `tests/run` runs it"]
fn lintian_finds_no_errors_in_the_package() {
    need("lintian", "lintian");
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(deb())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(out.status.success() && errors.is_empty(), "lintian:\n{text}");
    // The tags the first package had, which are not errors in every lintian.
    for tag in ["unstripped-binary-or-object", "no-changelog", "bogus-mail-host", "binary-without-manpage"] {
        assert!(!text.contains(tag), "lintian: {tag}\n{text}");
    }
}

/// dpkg on this machine: install, `check-config` on what it installed,
/// purge, and nothing of it left.
#[test]
#[ignore = "builds, installs and purges the Debian package (a second cargo build): `tests/run` runs it"]
fn the_package_installs_runs_check_config_and_purges_clean() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "this test installs the package with dpkg: run it as root (`tests/run` does)"
    );
    need("dpkg", "dpkg");
    let deb = deb();
    // A leftover from an interrupted run would hide what this install does.
    let _ = Command::new("dpkg").args(["--purge", "lineguard"]).output();
    run(Command::new("dpkg").args(["-i", &deb]).env("DEBIAN_FRONTEND", "noninteractive"));
    let purge = || run(Command::new("dpkg").args(["--purge", "lineguard"]));
    let checked = Command::new("/usr/bin/lineguard")
        .args(["check-config", "--config", "/etc/lineguard/lineguard.toml"])
        // The shipped config's port may be taken by another test's daemon.
        .env("LINEGUARD__HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let user = Command::new("getent").args(["passwd", "lineguard"]).output().unwrap();
    let password = std::fs::metadata("/etc/lineguard/mqtt-password");
    purge();
    let text =
        format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success(), "check-config on the installed package:\n{text}");
    assert!(text.contains("line-mlp"), "{text}");
    assert!(user.status.success(), "the package made no lineguard user");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(password.map(|m| m.permissions().mode() & 0o777).ok(), Some(0o600), "password file");
    for gone in ["/usr/bin/lineguard", "/etc/lineguard", "/usr/share/lineguard", "/var/lib/lineguard"] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    let user = Command::new("getent").args(["passwd", "lineguard"]).output().unwrap();
    assert!(!user.status.success(), "the lineguard user is left after purge");
    let status = Command::new("dpkg").args(["-s", "lineguard"]).output().unwrap();
    assert!(!status.status.success(), "dpkg still knows lineguard after purge");
}
