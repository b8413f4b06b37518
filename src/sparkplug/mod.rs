//! Sparkplug B, for SCADA (Ignition and other Sparkplug host applications).
//!
//! - [`proto`]: the payload, as prost messages written from the specification;
//! - [`node`]: lineguard as an Edge Node: births, data, deaths, `seq`, `bdSeq`,
//!   rebirth requests and the primary host's `STATE`, as a state machine;
//! - [`session`]: the node as its sink drives it, one MQTT session at a time;
//! - [`input`]: other edge nodes' DBIRTH/DDATA as telemetry;
//! - [`SparkplugSettings`]: the `[sparkplug]` section.
//!
//! The node publishes over its own MQTT connection (the daemon's `edge`): its will
//! must be its NDEATH, while the main connection's will is lineguard's
//! `offline` status, and MQTT gives each connection one will.

pub mod input;
pub(crate) mod node;
pub mod proto;
pub(crate) mod session;

/// `[sparkplug]`, validated: lineguard as an Edge Node.
#[derive(Debug, Clone)]
pub struct SparkplugSettings {
    pub node: node::NodeConfig,
    /// The Edge Node's own connection.
    pub client_id: String,
}

/// How a Sparkplug device id is made from a device's placeholder values:
/// `{line}.{machine}` → `line1.press3`. Placeholders may sit anywhere in the
/// text; the result must be a valid Sparkplug id (no `/`, `+`, `#`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdTemplate {
    raw: String,
    /// Literal text and placeholder positions (index into the input's placeholders).
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(usize),
}

impl DeviceIdTemplate {
    /// The default: the placeholder values joined by `.`.
    pub fn joined(placeholders: &[String]) -> Self {
        let raw = placeholders.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(".");
        Self::parse(&raw, placeholders).expect("built from the placeholders")
    }

    pub fn parse(raw: &str, placeholders: &[String]) -> Result<Self, String> {
        if raw.is_empty() || raw.contains(['/', '+', '#']) {
            return Err(format!(
                "`{raw}` must be non-empty, without `/`, `+` or `#` (a Sparkplug device id)"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("`{raw}`: `{{` without `}}`"))? + open;
            let name = &rest[open + 1..close];
            let i = placeholders.iter().position(|p| p == name).ok_or_else(|| {
                format!("`{raw}`: placeholder `{{{name}}}` is not in the input topic template")
            })?;
            parts.push(Part::Value(i));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{raw}`: `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Value(_))) {
            return Err(format!(
                "`{raw}` has no placeholder, so every device would be the same Sparkplug device"
            ));
        }
        Ok(Self { raw: raw.to_string(), parts })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The id of the device whose key (placeholder values joined by `/`) is `device`.
    pub fn render(&self, device: &str) -> String {
        let values: Vec<&str> = device.split('/').collect();
        let mut out = String::with_capacity(device.len() + 8);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Value(i) => out.push_str(values.get(*i).copied().unwrap_or("")),
            }
        }
        out
    }
}

/// Whether an input template reads Sparkplug B (`spBv1.0/{group}/DDATA/{node}/{device}`).
pub fn is_sparkplug_topic(template: &str) -> bool {
    template.starts_with("spBv1.0/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        let ph = vec!["line".to_string(), "machine".to_string()];
        assert_eq!(DeviceIdTemplate::joined(&ph).render("l1/p3"), "l1.p3");
        let t = DeviceIdTemplate::parse("{machine}@{line}", &ph).unwrap();
        assert_eq!(t.render("l1/p3"), "p3@l1");
        assert!(DeviceIdTemplate::parse("a/{line}", &ph).is_err());
        assert!(DeviceIdTemplate::parse("{cell}", &ph).is_err());
        assert!(DeviceIdTemplate::parse("fixed", &ph).is_err());
        assert!(DeviceIdTemplate::parse("{line", &ph).is_err());
    }
}
