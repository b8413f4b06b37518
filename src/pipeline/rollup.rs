//! Roll-ups: one health figure per group of a pipeline's devices (a line),
//! from each device's latest scores, on the data's time.
//!
//! The README's "Line health indices" section is the contract, so that
//! anyone can recompute a roll-up from the published scores:
//! - each input score goes on one scale, `u = (v − warn)/(alarm − warn)`
//!   (0 at warn, 1 at alarm, whatever the direction); a device's value is
//!   the input-weighted mean of its latest scores' `u`;
//! - `weighted`: the device-weighted mean of the values; `worst`: the
//!   largest value (a line runs at its bottleneck);
//! - a group's roll-up is due when a score of one of its devices arrives in
//!   a later interval (`floor(ts / interval)`) than the group's latest; it is
//!   made before that score is applied, stamped with the new interval's
//!   start, and a device whose latest score is more than `stale_secs` older
//!   than the stamp counts only as stale.
//!
//! Each device's latest scores are stored with its window (see
//! [`Rollups::store_with`]), and a group's interval is the newest of its
//! devices' latest scores': a restart goes on with the same roll-ups.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::ingest::topic::TopicTemplate;
use crate::model::card::{ModelCard, State};
use crate::pipeline::stored;

/// `method`: how device values make the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The device-weighted mean.
    #[default]
    Weighted,
    /// The largest device value.
    Worst,
}

/// Device weights: exact keys, then globs (`*` within one level), the one
/// with the most literal characters first; others weigh 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Weights {
    exact: HashMap<String, f64>,
    /// Pattern levels, literal characters, weight; most literal first.
    globs: Vec<(Vec<String>, usize, f64)>,
}

impl Weights {
    pub(crate) fn new(weights: &BTreeMap<String, f64>) -> Self {
        let mut w = Weights::default();
        for (k, v) in weights {
            match k.contains('*') {
                false => {
                    w.exact.insert(k.clone(), *v);
                }
                true => {
                    let literal = k.chars().filter(|c| *c != '*' && *c != '/').count();
                    w.globs.push((k.split('/').map(str::to_string).collect(), literal, *v));
                }
            }
        }
        // Stable: among as many literal characters, the key order of the table.
        w.globs.sort_by_key(|g| std::cmp::Reverse(g.1));
        w
    }

    /// The weight of `device`.
    pub(crate) fn of(&self, device: &str) -> f64 {
        if let Some(w) = self.exact.get(device) {
            return *w;
        }
        let levels = device.split('/').count();
        self.globs
            .iter()
            .find(|(pattern, _, _)| {
                pattern.len() == levels && pattern.iter().zip(device.split('/')).all(|(p, l)| glob(p, l))
            })
            .map_or(1.0, |g| g.2)
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A `[[rollups]]` table, validated.
#[derive(Debug, Clone)]
pub(crate) struct RollupSettings {
    pub name: String,
    /// Rendered from a device key: the device's group.
    pub group: TopicTemplate,
    /// Rendered from a device key too (its placeholders are the group's).
    pub output: TopicTemplate,
    /// Score name and weight, by name.
    pub inputs: Vec<(String, f64)>,
    pub weights: Weights,
    pub method: Method,
    pub interval_ms: i64,
    pub stale_ms: i64,
}

/// An input score of a roll-up, resolved against the model's card.
#[derive(Debug, Clone, Copy)]
struct Input {
    index: usize,
    weight: f64,
    warn: f64,
    alarm: f64,
}

/// Why a card cannot serve a roll-up.
pub(crate) fn check_card(r: &RollupSettings, card: &ModelCard) -> Result<(), String> {
    resolve(r, card).map(|_| ())
}

fn resolve(r: &RollupSettings, card: &ModelCard) -> Result<Vec<Input>, String> {
    r.inputs
        .iter()
        .map(|(name, weight)| {
            let (index, spec) = card.scores.iter().enumerate().find(|(_, s)| s.name == *name).ok_or_else(|| {
                let names: Vec<&str> = card.scores.iter().map(|s| s.name.as_str()).collect();
                format!("rollup `{}` reads score `{name}`, which the card does not have (it has {names:?})", r.name)
            })?;
            match (spec.warn, spec.alarm) {
                (Some(warn), Some(alarm)) if warn != alarm => Ok(Input { index, weight: *weight, warn, alarm }),
                _ => Err(format!(
                    "rollup `{}` reads score `{name}`, which needs both `warn` and `alarm` (and apart) in the card: \
                     a roll-up puts each score on the scale 0 at warn, 1 at alarm",
                    r.name
                )),
            }
        })
        .collect()
}

/// A device's latest scores, as a roll-up reads them.
#[derive(Debug, Clone)]
struct Latest {
    ts: i64,
    values: Box<[f32]>,
    state: State,
}

#[derive(Debug, Clone, Default)]
struct Group {
    interval: i64,
    devices: BTreeSet<String>,
    /// The latest roll-up made, for `/devices` and the status page.
    last: Option<RollupMessage>,
}

/// A roll-up, as published.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RollupMessage {
    pub ts: i64,
    pub group: String,
    pub rollup: String,
    pub method: Method,
    pub index: Option<f64>,
    pub devices: usize,
    pub stale: usize,
    pub states: States,
    pub driver: Option<Driver>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct States {
    pub ok: usize,
    pub warn: usize,
    pub alarm: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Driver {
    pub device: String,
    pub value: f64,
    pub share: Option<f64>,
}

/// One roll-up made: where it goes and what it says.
pub(crate) struct Made {
    pub topic: String,
    pub message: RollupMessage,
}

/// A pipeline's roll-ups and each device's latest scores.
#[derive(Debug, Default)]
pub(crate) struct Rollups {
    settings: Vec<RollupSettings>,
    /// Per roll-up, its inputs in the current card (none: it cannot be made).
    inputs: Vec<Option<Vec<Input>>>,
    latest: HashMap<String, Latest>,
    /// Per roll-up: its groups.
    groups: Vec<BTreeMap<String, Group>>,
}

impl Rollups {
    pub(crate) fn new(settings: Vec<RollupSettings>, card: &ModelCard) -> Self {
        let mut r = Rollups { groups: vec![BTreeMap::new(); settings.len()], settings, ..Default::default() };
        r.recard(card);
        r
    }

    /// A new live model: inputs resolved again (the loader checked them).
    pub(crate) fn recard(&mut self, card: &ModelCard) {
        self.inputs = self.settings.iter().map(|r| resolve(r, card).ok()).collect();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    /// A window of `device` scored `values` at `ts`: the roll-ups it makes
    /// due (made from the scores before it), then it is applied.
    pub(crate) fn scored(
        &mut self,
        input: &TopicTemplate,
        device: &str,
        ts: i64,
        values: &[f32],
        state: State,
        out: &mut Vec<Made>,
    ) {
        if self.settings.is_empty() {
            return;
        }
        for (i, r) in self.settings.iter().enumerate() {
            let Some(inputs) = &self.inputs[i] else { continue };
            let key = r.group.render(input, device);
            let interval = ts.div_euclid(r.interval_ms);
            let groups = &mut self.groups[i];
            let g = match groups.get_mut(&key) {
                Some(g) => g,
                None => {
                    groups.insert(key.clone(), Group { interval, ..Default::default() });
                    groups.get_mut(&key).expect("inserted")
                }
            };
            if interval > g.interval {
                let stamp = interval * r.interval_ms;
                let message = make(r, inputs, &key, g, &self.latest, stamp);
                g.last = Some(message.clone());
                out.push(Made { topic: r.output.render(input, device), message });
                g.interval = interval;
            }
            if !g.devices.contains(device) {
                g.devices.insert(device.to_string());
            }
        }
        match self.latest.get_mut(device) {
            Some(l) if l.values.len() == values.len() => {
                l.ts = ts;
                l.values.copy_from_slice(values);
                l.state = state;
            }
            _ => {
                self.latest.insert(device.to_string(), Latest { ts, values: values.into(), state });
            }
        }
    }

    /// The latest roll-up of every group, by roll-up and group.
    pub(crate) fn view(&self) -> Vec<RollupMessage> {
        self.groups.iter().flat_map(|g| g.values().filter_map(|g| g.last.clone())).collect()
    }

    /// Append `device`'s latest scores to its stored window `snap`.
    pub(crate) fn store_with(&self, device: &str, snap: &mut Vec<u8>) {
        let Some(l) = self.latest.get(device).filter(|_| !self.settings.is_empty()) else { return };
        let start = snap.len();
        snap.extend_from_slice(&l.ts.to_le_bytes());
        snap.push(l.state as u8);
        for v in l.values.iter() {
            snap.extend_from_slice(&v.to_le_bytes());
        }
        stored::seal(snap, start, MAGIC);
    }

    pub(crate) fn split_stored(stored: &[u8]) -> (&[u8], Option<&[u8]>) {
        stored::split(stored, MAGIC)
    }

    /// Restore `device`'s latest scores (and its place in its groups) from
    /// a record `store_with` wrote for a card of `scores` scores.
    pub(crate) fn restore(
        &mut self,
        input: &TopicTemplate,
        device: &str,
        scores: usize,
        record: &[u8],
    ) -> bool {
        let Some(body) = stored::checked(record) else { return false };
        if body.len() != 9 + 4 * scores {
            return false;
        }
        let ts = i64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let state = match body[8] {
            0 => State::Ok,
            1 => State::Warn,
            2 => State::Alarm,
            _ => return false,
        };
        let values: Box<[f32]> =
            body[9..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        for (i, r) in self.settings.iter().enumerate() {
            let key = r.group.render(input, device);
            let interval = ts.div_euclid(r.interval_ms);
            let g = self.groups[i].entry(key).or_insert_with(|| Group { interval, ..Default::default() });
            g.interval = g.interval.max(interval);
            g.devices.insert(device.to_string());
        }
        self.latest.insert(device.to_string(), Latest { ts, values, state });
        true
    }

    /// Forget devices (evicted windows).
    pub(crate) fn forget(&mut self, devices: &[String]) {
        for d in devices {
            if self.latest.remove(d).is_some() {
                for groups in &mut self.groups {
                    groups.values_mut().for_each(|g| {
                        g.devices.remove(d);
                    });
                }
            }
        }
    }
}

/// Ends a stored window that carries its device's latest scores.
const MAGIC: [u8; 4] = *b"LGr1";

/// The roll-up of group `key` at `stamp`, from its devices' latest scores.
fn make(
    r: &RollupSettings,
    inputs: &[Input],
    key: &str,
    g: &Group,
    latest: &HashMap<String, Latest>,
    stamp: i64,
) -> RollupMessage {
    let (mut stale, mut states) = (0, States::default());
    let (mut weighted, mut weights, mut worst) = (0.0f64, 0.0f64, None::<f64>);
    let mut driver: Option<(&str, f64, f64)> = None;
    for device in &g.devices {
        let Some(l) = latest.get(device) else { continue };
        if stamp - l.ts > r.stale_ms {
            stale += 1;
            continue;
        }
        match l.state {
            State::Ok => states.ok += 1,
            State::Warn => states.warn += 1,
            State::Alarm => states.alarm += 1,
        }
        let (mut sum, mut wsum) = (0.0f64, 0.0f64);
        for i in inputs {
            let u = (f64::from(l.values[i.index]) - i.warn) / (i.alarm - i.warn);
            sum += i.weight * u;
            wsum += i.weight;
        }
        let value = sum / wsum;
        let w = r.weights.of(device);
        weighted += w * value;
        weights += w;
        worst = Some(worst.map_or(value, |m: f64| m.max(value)));
        if driver.is_none_or(|(_, _, push)| w * value > push) {
            driver = Some((device, value, w * value));
        }
    }
    let devices = states.ok + states.warn + states.alarm;
    let index = match r.method {
        Method::Weighted => (weights > 0.0).then(|| weighted / weights),
        Method::Worst => worst,
    };
    RollupMessage {
        ts: stamp,
        group: key.to_string(),
        rollup: r.name.clone(),
        method: r.method,
        index,
        devices,
        stale,
        states,
        driver: driver.map(|(device, value, push)| Driver {
            device: device.to_string(),
            value,
            share: (weighted > 0.0).then(|| push / weighted),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_prefer_the_exact_key_then_the_most_literal_glob() {
        let w = Weights::new(&BTreeMap::from([
            ("line1/press3".to_string(), 3.0),
            ("line1/*".to_string(), 2.0),
            ("line1/press*".to_string(), 5.0),
            ("*/*".to_string(), 0.5),
        ]));
        assert_eq!(w.of("line1/press3"), 3.0);
        assert_eq!(w.of("line1/press4"), 5.0);
        assert_eq!(w.of("line1/mill1"), 2.0);
        assert_eq!(w.of("line2/mill1"), 0.5);
        assert_eq!(w.of("line2/a/b"), 1.0, "`*` stays in one level");
        assert!(glob("a*c*e", "abcde") && !glob("a*c*e", "abde") && glob("*", "") && !glob("ab", "abc"));
    }
}
