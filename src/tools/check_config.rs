//! `lineguard check-config`: the unit's `ExecStartPre`. Validates the file
//! (with the environment's overrides), that `state.dir` takes writes, and
//! every model it names; prints the effective settings, secrets masked.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use crate::config;

/// What `check-config` prints, or why the configuration is refused.
pub fn check(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<String> {
    let settings = config::load(path, env)?;
    crate::durable::store::check_writable(&settings.state.dir)
        .with_context(|| format!("{}: `state.dir`", settings.path.display()))?;
    let models = crate::model::load_pipelines(&settings)?;
    let mut out = format!("# {}: valid\n\n{}\n", settings.path.display(), settings.display_masked());
    let _ = writeln!(out, "# mqtt password: {}", settings.mqtt.password_source);
    let _ = writeln!(out, "# state.dir {}: writable", settings.state.dir.display());
    for (p, m) in settings.pipelines.iter().zip(&models) {
        let _ = writeln!(
            out,
            "# pipeline `{}`: subscribes `{}` ({} payloads, timestamps in {}), publishes `{}`, model {} v{} ({} x {} features, sha256 {})",
            p.name,
            p.filters().join("` and `"),
            p.input_format.as_str(),
            p.ts_unit.as_str(),
            p.output_display(settings.sparkplug.as_ref().map(|s| &s.node)),
            m.card.name,
            m.card.version,
            m.card.window,
            m.card.features.len(),
            &m.sha256[..16]
        );
    }
    Ok(out)
}
