//! Topic templates such as `plant/{line}/{machine}/telemetry`.
//!
//! A template is parsed once when the config loads. Each `{name}` stands for
//! exactly one topic level; the subscription filter puts `+` in its place and
//! the device key is the captured levels joined by `/` (`line1/press3`).
//! Matching a topic borrows from it: when the placeholders are adjacent levels
//! (the usual case) the device key is a slice of the topic, no allocation.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    #[error("topic template is empty")]
    Empty,
    #[error("level {level} `{text}`: MQTT wildcards (+, #) are not allowed in a template; use a {{name}} placeholder for a level that varies")]
    Wildcard { level: usize, text: String },
    #[error("level {level} `{text}`: a placeholder must be a whole topic level, like `{{machine}}`")]
    PartialPlaceholder { level: usize, text: String },
    #[error("level {level} `{text}`: placeholder names use letters, digits and `_`")]
    BadName { level: usize, text: String },
    #[error("placeholder `{{{0}}}` appears twice")]
    Duplicate(String),
    #[error("the template has no {{placeholder}}, so devices cannot be told apart; write e.g. `plant/{{line}}/{{machine}}/telemetry`")]
    NoPlaceholder,
    #[error("placeholder `{{{0}}}` is not in the input topic template")]
    UnknownPlaceholder(String),
    #[error("`{output}` could receive its own scores: it overlaps the input subscription `{input}`")]
    Feedback { output: String, input: String },
    #[error("one value per message needs a `{{{0}}}` level naming the feature, e.g. `uns/{{site}}/{{machine}}/{{{0}}}`")]
    NoFeature(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// Index into `names`.
    Placeholder(usize),
    /// The level that names the feature of a one-value message: matched like
    /// a placeholder, but not part of the device key.
    Feature,
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    raw: String,
    levels: Vec<Level>,
    names: Vec<String>,
    /// Level indices of the placeholders, in order.
    slots: Vec<usize>,
    /// Placeholders are adjacent levels, so the device key is one slice of the topic.
    contiguous: bool,
    /// The level naming the feature, if any (see [`TopicTemplate::naming_features_by`]).
    feature_slot: Option<usize>,
}

impl TopicTemplate {
    /// Parse an input template whose messages name their devices too
    /// (Kepware's tag ids): placeholders are optional, and `more` names the
    /// parts a message adds to the device key after the topic's, so that an
    /// output template may use them.
    pub fn parse_input_naming_devices(raw: &str, more: &[String]) -> Result<Self, TopicError> {
        let mut t = Self::parse(raw)?;
        for name in more {
            if t.names.contains(name) {
                return Err(TopicError::Duplicate(name.clone()));
            }
            t.names.push(name.clone());
        }
        Ok(t)
    }

    /// Parse an input template: it needs at least one placeholder.
    pub fn parse_input(raw: &str) -> Result<Self, TopicError> {
        let t = Self::parse(raw)?;
        if t.names.is_empty() {
            return Err(TopicError::NoPlaceholder);
        }
        Ok(t)
    }

    /// Parse an output template whose placeholders must all come from `input`,
    /// and which must not overlap `input`'s subscription (scores would loop back).
    pub fn parse_output(raw: &str, input: &TopicTemplate) -> Result<Self, TopicError> {
        let t = Self::parse(raw)?;
        if let Some(n) = t.names.iter().find(|n| !input.names.contains(n)) {
            return Err(TopicError::UnknownPlaceholder(n.clone()));
        }
        if t.overlaps(input) {
            return Err(TopicError::Feedback { output: raw.to_string(), input: input.filter() });
        }
        Ok(t)
    }

    fn parse(raw: &str) -> Result<Self, TopicError> {
        if raw.is_empty() {
            return Err(TopicError::Empty);
        }
        let mut levels = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut slots = Vec::new();
        for (i, text) in raw.split('/').enumerate() {
            let err_text = || text.to_string();
            if text.contains(['+', '#']) {
                return Err(TopicError::Wildcard { level: i + 1, text: err_text() });
            }
            let opens = text.contains('{');
            let closes = text.contains('}');
            if !opens && !closes {
                levels.push(Level::Literal(text.to_string()));
                continue;
            }
            let inner = text
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .filter(|t| !t.contains(['{', '}']))
                .ok_or_else(|| TopicError::PartialPlaceholder { level: i + 1, text: err_text() })?;
            if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TopicError::BadName { level: i + 1, text: err_text() });
            }
            if names.iter().any(|n| n == inner) {
                return Err(TopicError::Duplicate(inner.to_string()));
            }
            slots.push(i);
            levels.push(Level::Placeholder(names.len()));
            names.push(inner.to_string());
        }
        let contiguous = slots.windows(2).all(|w| w[1] == w[0] + 1);
        Ok(Self { raw: raw.to_string(), levels, names, slots, contiguous, feature_slot: None })
    }

    /// Take the placeholder `name` as the level naming each message's
    /// feature (`uns/{site}/{machine}/{feature}`): it leaves the device key,
    /// which the other placeholders make.
    pub fn naming_features_by(mut self, name: &str) -> Result<Self, TopicError> {
        let Some(ix) = self.names.iter().position(|n| n == name) else {
            return Err(TopicError::NoFeature(name.to_string()));
        };
        let slot = self.slots.remove(ix);
        self.names.remove(ix);
        if self.names.is_empty() {
            return Err(TopicError::NoPlaceholder);
        }
        self.levels[slot] = Level::Feature;
        for level in &mut self.levels {
            if let Level::Placeholder(i) = level {
                if *i > ix {
                    *i -= 1;
                }
            }
        }
        self.feature_slot = Some(slot);
        self.contiguous = self.slots.windows(2).all(|w| w[1] == w[0] + 1);
        Ok(self)
    }

    /// The feature a topic names, for a template [naming features](Self::naming_features_by).
    pub fn feature<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.split('/').nth(self.feature_slot?)
    }

    /// A topic it matches, for examples: each placeholder filled with its
    /// name and a 1 (`plant/line1/machine1/telemetry`), the feature level
    /// with `feature`.
    pub fn example(&self, feature: &str) -> String {
        let names: Vec<&str> = self.raw.split('/').collect();
        self.levels
            .iter()
            .zip(names)
            .map(|(l, text)| match l {
                Level::Literal(s) => s.clone(),
                Level::Placeholder(_) => format!("{}1", text.trim_matches(['{', '}'])),
                Level::Feature => feature.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Placeholder names in order (with those a message adds, see
    /// [`TopicTemplate::parse_input_naming_devices`]).
    pub fn placeholders(&self) -> &[String] {
        &self.names
    }

    /// The MQTT subscription filter: the template with `+` for each placeholder.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Placeholder(_) | Level::Feature => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether some topic could match both templates.
    fn overlaps(&self, other: &TopicTemplate) -> bool {
        self.levels.len() == other.levels.len()
            && self.levels.iter().zip(&other.levels).all(|(a, b)| match (a, b) {
                (Level::Literal(x), Level::Literal(y)) => x == y,
                _ => true,
            })
    }

    /// The device key of `topic` if it matches, else `None`.
    ///
    /// A placeholder never matches an empty level: `plant//press/telemetry`
    /// has no line, and would make device keys ambiguous.
    pub fn device_key<'t>(&self, topic: &'t str) -> Option<Cow<'t, str>> {
        let (first, last_end) = self.placeholder_span(topic)?;
        if self.contiguous {
            return Some(Cow::Borrowed(&topic[first..last_end]));
        }
        let parts: Vec<&str> = topic.split('/').collect();
        Some(Cow::Owned(self.slots.iter().map(|&i| parts[i]).collect::<Vec<_>>().join("/")))
    }

    /// As [`TopicTemplate::device_key`], into `out` (cleared first): false,
    /// and `out` empty, when `topic` does not match. Allocates nothing once
    /// `out` has grown to the longest key, whatever the template (a
    /// Sparkplug topic's group, node and device levels are not adjacent).
    pub fn device_key_into(&self, topic: &str, out: &mut String) -> bool {
        out.clear();
        let Some((first, last_end)) = self.placeholder_span(topic) else { return false };
        if self.contiguous {
            out.push_str(&topic[first..last_end]);
            return true;
        }
        let mut slots = self.slots.iter().peekable();
        for (i, part) in topic.split('/').enumerate() {
            if slots.peek() == Some(&&i) {
                slots.next();
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(part);
            }
        }
        true
    }

    /// Whether `topic` matches. Never allocates, whatever the template.
    pub fn matches(&self, topic: &str) -> bool {
        self.placeholder_span(topic).is_some()
    }

    /// If `topic` matches, the byte range from its first placeholder level's
    /// start to its last one's end.
    fn placeholder_span(&self, topic: &str) -> Option<(usize, usize)> {
        let mut levels = self.levels.iter();
        let mut first: Option<usize> = None;
        let mut last_end = 0;
        let mut pos = 0;
        for part in topic.split('/') {
            let start = pos;
            pos += part.len() + 1;
            match levels.next()? {
                Level::Literal(s) if s == part => {}
                Level::Literal(_) => return None,
                Level::Placeholder(_) | Level::Feature if part.is_empty() => return None,
                Level::Feature => {}
                Level::Placeholder(_) => {
                    first.get_or_insert(start);
                    last_end = start + part.len();
                }
            }
        }
        if levels.next().is_some() {
            return None;
        }
        // No placeholder (a Kepware topic): every device key comes from the message.
        Some(first.map_or((0, 0), |f| (f, last_end)))
    }

    /// Render this (output) template for a device of `input`: the device key's
    /// levels are the input placeholders' values, in order.
    pub fn render(&self, input: &TopicTemplate, device: &str) -> String {
        let values: Vec<&str> = device.split('/').collect();
        let mut out = String::with_capacity(self.raw.len() + device.len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match level {
                Level::Literal(s) => out.push_str(s),
                Level::Placeholder(ix) => {
                    let name = &self.names[*ix];
                    let pos = input.names.iter().position(|n| n == name);
                    out.push_str(pos.and_then(|p| values.get(p)).copied().unwrap_or(""));
                }
                Level::Feature => {}
            }
        }
        out
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> TopicTemplate {
        TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap()
    }

    #[test]
    fn a_feature_level_leaves_the_device_key() {
        let t = TopicTemplate::parse_input("uns/{site}/{feature}/{machine}")
            .unwrap()
            .naming_features_by("feature")
            .unwrap();
        assert_eq!(t.filter(), "uns/+/+/+");
        assert_eq!(t.placeholders(), ["site", "machine"]);
        assert_eq!(t.device_key("uns/s1/motor_temp/press3").unwrap(), "s1/press3");
        assert_eq!(t.feature("uns/s1/motor_temp/press3"), Some("motor_temp"));
        assert!(t.device_key("uns/s1//press3").is_none(), "an empty feature level does not match");
        let out = TopicTemplate::parse_output("scores/{site}/{machine}", &t).unwrap();
        assert_eq!(out.render(&t, "s1/press3"), "scores/s1/press3");
        assert_eq!(
            TopicTemplate::parse_output("scores/{feature}/{machine}", &t),
            Err(TopicError::UnknownPlaceholder("feature".into())),
            "scores are per device, not per feature"
        );
        let plain = TopicTemplate::parse_input("uns/{site}/{machine}").unwrap();
        assert_eq!(plain.naming_features_by("feature"), Err(TopicError::NoFeature("feature".into())));
        let alone = TopicTemplate::parse_input("uns/press1/{feature}").unwrap();
        assert_eq!(alone.naming_features_by("feature"), Err(TopicError::NoPlaceholder));
    }

    #[test]
    fn filter_and_device_key() {
        let t = input();
        assert_eq!(t.filter(), "plant/+/+/telemetry");
        assert_eq!(t.placeholders(), ["line", "machine"]);
        let key = t.device_key("plant/line1/press3/telemetry").unwrap();
        assert!(matches!(key, Cow::Borrowed("line1/press3")));
        assert_eq!(t.device_key("plant/line1/press3/other"), None);
        assert_eq!(t.device_key("plant/line1/press3/telemetry/x"), None);
        assert_eq!(t.device_key("plant/line1/telemetry"), None);
        assert_eq!(t.device_key("plant//press3/telemetry"), None);
        assert_eq!(t.device_key("other/line1/press3/telemetry"), None);
    }

    #[test]
    fn non_adjacent_placeholders_join_with_slash() {
        let t = TopicTemplate::parse_input("{site}/data/{machine}").unwrap();
        assert_eq!(t.device_key("s1/data/m2").unwrap(), "s1/m2");
        let out = TopicTemplate::parse_output("scores/{machine}/{site}/lg", &t).unwrap();
        assert_eq!(out.render(&t, "s1/m2"), "scores/m2/s1/lg");
        // Same depth as the input and no literal level to tell them apart.
        assert!(TopicTemplate::parse_output("scores/{machine}/{site}", &t).is_err());
    }

    #[test]
    fn output_renders_from_device_key() {
        let t = input();
        let out = TopicTemplate::parse_output("plant/{line}/{machine}/lineguard/scores", &t).unwrap();
        assert_eq!(out.render(&t, "line1/press3"), "plant/line1/press3/lineguard/scores");
    }

    #[test]
    fn rejects_bad_templates() {
        use TopicError::*;
        assert_eq!(TopicTemplate::parse_input(""), Err(Empty));
        assert!(matches!(TopicTemplate::parse_input("plant/+/x"), Err(Wildcard { level: 2, .. })));
        assert!(matches!(TopicTemplate::parse_input("plant/#"), Err(Wildcard { .. })));
        assert!(matches!(TopicTemplate::parse_input("plant/m-{id}"), Err(PartialPlaceholder { .. })));
        assert!(matches!(TopicTemplate::parse_input("plant/{id"), Err(PartialPlaceholder { .. })));
        assert!(matches!(TopicTemplate::parse_input("plant/{a b}"), Err(BadName { .. })));
        assert!(matches!(TopicTemplate::parse_input("plant/{}"), Err(BadName { .. })));
        assert_eq!(TopicTemplate::parse_input("{a}/{a}"), Err(Duplicate("a".into())));
        assert_eq!(TopicTemplate::parse_input("plant/press"), Err(NoPlaceholder));
        let t = input();
        assert_eq!(TopicTemplate::parse_output("x/{cell}", &t), Err(UnknownPlaceholder("cell".into())));
        assert!(matches!(
            TopicTemplate::parse_output("plant/{machine}/{line}/telemetry", &t),
            Err(Feedback { .. })
        ));
        assert!(matches!(TopicTemplate::parse_output("plant/a/b/telemetry", &t), Err(Feedback { .. })));
    }

    #[test]
    fn device_key_into_writes_what_device_key_returns() {
        let mut buf = String::from("stale");
        for (template, topics) in [
            (
                "plant/{line}/{machine}/telemetry",
                vec!["plant/l1/m2/telemetry", "plant/l1/m2/other", "plant//m2/telemetry"],
            ),
            ("spBv1.0/{group}/DDATA/{node}/{device}", vec!["spBv1.0/g/DDATA/n/d", "spBv1.0/g/DBIRTH/n/d"]),
            ("site/{site}/raw/{machine}", vec!["site/s1/raw/m9", "site/s1/raw"]),
            ("uns/{site}/{machine}/{feature}", vec!["uns/a/b/temp"]),
            ("iotgateway", vec!["iotgateway", "iotgateway/x"]),
        ] {
            let t = TopicTemplate::parse_input(template)
                .or_else(|_| {
                    TopicTemplate::parse_input(template).and_then(|t| t.naming_features_by("feature"))
                })
                .or_else(|_| TopicTemplate::parse_input_naming_devices(template, &[]))
                .unwrap_or_else(|e| panic!("{template}: {e:?}"));
            for topic in topics {
                let want = t.device_key(topic);
                assert_eq!(t.device_key_into(topic, &mut buf), want.is_some(), "{template} {topic}");
                assert_eq!(buf, want.map(|k| k.into_owned()).unwrap_or_default(), "{template} {topic}");
            }
        }
    }
}
