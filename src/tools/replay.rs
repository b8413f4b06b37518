//! `lineguard replay`: a recording (from `lineguard record`) or a table of
//! samples through every pipeline's whole path — decode, assembly, windows,
//! model, states, alarms, explanations, shadow — with no broker and no state
//! directory; each message the daemon would publish is written as one JSON
//! line `{"topic", "payload"}`: each pipeline's in the order the daemon
//! publishes them, and the pipelines' interleaved in input order.
//!
//! It runs the daemon's own pipeline worker (in [`Mode::Replay`]), so
//! the bytes are the daemon's: scores do not depend on which windows share a
//! model run, and nothing here depends on the wall clock — a sample without
//! `ts` takes the recording's `received_ms`, and idle devices are evicted on
//! the recording's time.
//!
//! Dead letters (with `limits.dead_letter_topic`) are written after the
//! message they refuse. Not replayed: what the daemon publishes on its own
//! clock (status, drift summaries); a pipeline with Sparkplug B output is
//! refused, its births and sequence numbers belonging to a live session.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};

use crate::config::{self, Settings};
use crate::durable::store::NewEntry;
use crate::ingest::decode::TsSeed;
use crate::ingest::reject::{Reason, Rejection};
use crate::model::card::State;
use crate::pipeline::worker::{Mode, Worker};
use crate::pipeline::{Inbound, Output, Pipeline, PipelineModels};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The configuration file (TOML): its pipelines, models and limits (no broker is contacted).
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// A recording (JSON Lines, from `lineguard record`) or a table of samples (`.csv`, header `device,ts,<features...>`); `-`: standard input.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// The JSON Lines file to write: one `{"topic", "payload"}` per message the daemon would publish; `-`: standard output.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replay only this pipeline: the one a CSV table is fed to (default: the only one), or one of a recording's.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
}

/// Pipelines' results are collected after this many input messages (and at
/// the end): what is held in memory at once.
const BLOCK: u64 = 1024;
/// Unreadable lines or rows reported one by one, before only counting them.
const SHOWN_UNREADABLE: u64 = 5;

/// One recorded message (see [`record`](crate::tools::record)); other keys a tool adds
/// (`qos`, `retain`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct Recorded {
    topic: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_b64: Option<String>,
    received_ms: i64,
}

/// One published message, as replay writes it.
#[derive(Debug, Serialize)]
struct Published<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

/// What the replay did, for its closing summary.
#[derive(Debug, Default)]
struct Counts {
    /// Input lines (or rows) read.
    read: u64,
    /// Lines or rows that could not be read, and the first few reasons.
    unreadable: u64,
    /// Messages whose topic no pipeline takes.
    unrouted: u64,
    /// Messages written to the output.
    written: u64,
}

pub(crate) fn main(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    crate::ops::logging::init(crate::ops::logging::LogFormat::Text, "warn");
    let settings = config::load(&args.config, std::env::vars())?;
    let models: Vec<PipelineModels> =
        settings.pipelines.iter().map(Pipeline::load_models).collect::<Result<_, _>>()?;
    let chosen: Vec<usize> = match &args.pipeline {
        Some(name) => vec![named(&settings.pipelines, name)?],
        None => (0..settings.pipelines.len()).collect(),
    };
    let (input, size) = open(&args.input)?;
    let progress = progress_bar(size);
    let mut reader = std::io::BufReader::new(progress.wrap_read(input));
    let is_csv = match is_stdio(&args.input) {
        // Piped in: a recording's lines are JSON objects; anything else is a table.
        true => {
            !reader.fill_buf().context("cannot read standard input")?.trim_ascii_start().starts_with(b"{")
        }
        false => args.input.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    };
    if is_csv && chosen.len() != 1 {
        bail!("a CSV table goes to one pipeline: name it with --pipeline ({})", names(&settings.pipelines));
    }
    let mut workers = start(&settings, &chosen, &models)?;
    let mut out = Lines::create(&args.output)?;
    let started = Instant::now();
    let mut counts = Counts::default();
    if is_csv {
        replay_csv(reader, &mut workers[0], &mut out, &mut counts)?;
    } else {
        replay_recording(reader, &mut workers, &mut out, &mut counts)?;
    }
    collect(&mut workers, &mut out, &mut counts)?;
    out.finish()?;
    progress.finish_and_clear();
    let summary = summary(&args, &workers, &counts, started.elapsed().as_secs_f64());
    // The output on stdout keeps it to itself.
    match is_stdio(&args.output) {
        true => eprint!("{summary}"),
        false => print!("{summary}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `-`: standard input (or output).
fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The input, and its size when it is a file.
fn open(path: &Path) -> anyhow::Result<(Box<dyn std::io::Read>, Option<u64>)> {
    if is_stdio(path) {
        return Ok((Box::new(std::io::stdin().lock()), None));
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    Ok((Box::new(file), size))
}

/// Progress through the input (its bytes, of its size when known), on
/// stderr when that is a terminal.
fn progress_bar(size: Option<u64>) -> indicatif::ProgressBar {
    let (bar, template) = match size {
        Some(size) => (
            indicatif::ProgressBar::new(size),
            "{spinner} replaying [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        ),
        None => (indicatif::ProgressBar::new_spinner(), "{spinner} replaying {bytes} ({bytes_per_sec})"),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A worker for each `chosen` pipeline; Sparkplug B output refused.
fn start(settings: &Settings, chosen: &[usize], models: &[PipelineModels]) -> anyhow::Result<Vec<Worker>> {
    let mut workers = Vec::with_capacity(chosen.len());
    for &i in chosen {
        let (p, m) = (&settings.pipelines[i], &models[i]);
        if let Output::Sparkplug(_) = p.output {
            bail!(
                "pipeline `{}` publishes Sparkplug B: replay writes JSON outputs only (a Sparkplug \
                 session's births and sequence numbers belong to a live broker connection); give it \
                 an output_topic to replay it",
                p.name
            );
        }
        let mode = Mode::Replay(Default::default());
        workers.push(Worker::new(p.clone(), m.live.clone(), m.shadow.clone(), settings.limits.clone(), mode));
    }
    Ok(workers)
}

/// The JSON Lines output.
struct Lines {
    path: PathBuf,
    file: std::io::BufWriter<Box<dyn Write>>,
}

impl Lines {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file: Box<dyn Write> = match is_stdio(path) {
            true => Box::new(std::io::stdout().lock()),
            false => Box::new(
                std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            ),
        };
        Ok(Self { path: path.to_path_buf(), file: std::io::BufWriter::new(file) })
    }

    fn write<'a>(&mut self, entries: impl Iterator<Item = &'a NewEntry>) -> anyhow::Result<()> {
        for e in entries {
            let line = match std::str::from_utf8(&e.payload) {
                Ok(text) => Published { topic: &e.topic, payload: Some(text), payload_b64: None },
                Err(_) => Published {
                    topic: &e.topic,
                    payload: None,
                    payload_b64: Some(base64::engine::general_purpose::STANDARD.encode(&e.payload)),
                },
            };
            serde_json::to_writer(&mut self.file, &line)
                .and_then(|()| self.file.write_all(b"\n").map_err(serde_json::Error::io))
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.file.flush().with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// Every pipeline's published messages so far, in input order: by the
/// message that caused them, then by pipeline (each pipeline's own are in
/// that order already; the sort is stable).
fn collect(workers: &mut [Worker], out: &mut Lines, counts: &mut Counts) -> anyhow::Result<()> {
    let mut all: Vec<(u64, usize, NewEntry)> = Vec::new();
    for (l, worker) in workers.iter_mut().enumerate() {
        all.extend(worker.take_published().into_iter().map(|(cause, e)| (cause, l, e)));
    }
    if workers.len() > 1 {
        all.sort_by_key(|(cause, l, _)| (*cause, *l));
    }
    counts.written += all.len() as u64;
    out.write(all.iter().map(|(_, _, e)| e))
}

/// A line or row that cannot be read: counted, and the first few shown.
fn unreadable(counts: &mut Counts, what: std::fmt::Arguments) {
    counts.unreadable += 1;
    if counts.unreadable <= SHOWN_UNREADABLE {
        eprintln!("skipped {what}");
    } else if counts.unreadable == SHOWN_UNREADABLE + 1 {
        eprintln!("(further unreadable input is only counted)");
    }
}

fn replay_recording(
    reader: impl BufRead,
    workers: &mut [Worker],
    out: &mut Lines,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    for (n, line) in reader.lines().enumerate() {
        let line = line.context("cannot read the recording")?;
        if line.trim().is_empty() {
            continue;
        }
        counts.read += 1;
        let recorded = match serde_json::from_str::<Recorded>(&line) {
            Ok(r) => r,
            Err(e) => {
                unreadable(counts, format_args!("line {}: not a recorded message ({e})", n + 1));
                continue;
            }
        };
        let payload = match (recorded.payload, recorded.payload_b64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    unreadable(counts, format_args!("line {}: payload_b64 is not base64 ({e})", n + 1));
                    continue;
                }
            },
            _ => {
                unreadable(counts, format_args!("line {}: needs exactly one of payload, payload_b64", n + 1));
                continue;
            }
        };
        let mut taken = false;
        for worker in workers.iter_mut().filter(|w| w.pipeline().input.takes(&recorded.topic)) {
            taken = true;
            worker.replay(
                counts.read,
                Inbound {
                    topic: recorded.topic.clone(),
                    payload: payload.clone(),
                    received_ms: recorded.received_ms,
                    redelivered: false,
                    oversize: None,
                    ack: None,
                },
            );
        }
        if !taken {
            counts.unrouted += 1;
        }
        if counts.read.is_multiple_of(BLOCK) {
            collect(workers, out, counts)?;
        }
    }
    Ok(())
}

fn names(pipelines: &[Pipeline]) -> String {
    pipelines.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The pipeline `--pipeline` names.
fn named(pipelines: &[Pipeline], name: &str) -> anyhow::Result<usize> {
    pipelines
        .iter()
        .position(|p| p.name == name)
        .with_context(|| format!("no pipeline `{name}` (the configuration has: {})", names(pipelines)))
}

/// Where each of the card's features is in a row (header `device,ts,<features...>`).
fn columns(header: &csv::StringRecord, features: &[String]) -> anyhow::Result<Vec<usize>> {
    let head: Vec<&str> = header.iter().map(str::trim).collect();
    if head.len() < 2 || head[0] != "device" || head[1] != "ts" {
        bail!(
            "the CSV header must start with `device,ts`, then the features ({}); it is `{}`",
            features.join(","),
            head.join(",")
        );
    }
    let unknown: Vec<&str> = head[2..].iter().copied().filter(|h| !features.iter().any(|f| f == h)).collect();
    if !unknown.is_empty() {
        bail!(
            "CSV columns the model does not read: {} (its features: {})",
            unknown.join(", "),
            features.join(", ")
        );
    }
    let mut at = Vec::with_capacity(features.len());
    let mut missing = Vec::new();
    for f in features {
        match head.iter().position(|h| h == f) {
            Some(i) => at.push(i),
            None => missing.push(f.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!("CSV columns missing for the model's features: {}", missing.join(", "));
    }
    if let Some(dup) = head.iter().enumerate().find(|(i, h)| head[..*i].contains(h)) {
        bail!("CSV column `{}` appears twice", dup.1);
    }
    Ok(at)
}

/// The header's delimiter: `,`, or `;` or a tab where the header uses that
/// instead (a spreadsheet's export in many locales uses `;`).
fn delimiter(head: &[u8]) -> u8 {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(head);
    let count = |c: u8| line.iter().filter(|b| **b == c).count();
    let (comma, semicolon, tab) = (count(b','), count(b';'), count(b'\t'));
    if semicolon > comma && semicolon >= tab {
        b';'
    } else if tab > comma && tab > semicolon {
        b'\t'
    } else {
        b','
    }
}

/// One cell: a finite number, empty (NaN: absent), or why not. With
/// `decimal_comma` (a `;`-separated table), `1,5` is 1.5.
fn cell(feature: &str, text: &str, decimal_comma: bool) -> Result<f64, Rejection> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(f64::NAN);
    }
    let swapped;
    let number = if decimal_comma && text.contains(',') && !text.contains('.') {
        swapped = text.replace(',', ".");
        swapped.as_str()
    } else {
        text
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(Rejection::new(Reason::NonFinite, format!("{feature} is {v}"))),
        Err(_) => Err(Rejection::new(Reason::NonNumeric, format!("{feature} is `{text}`, not a number"))),
    }
}

/// The `ts` cell: a number in the pipeline's `ts_unit`, or RFC 3339.
fn ts_cell(pipeline: &Pipeline, text: &str) -> Result<i64, Rejection> {
    let text = text.trim();
    let value = match text.parse::<serde_json::Number>() {
        Ok(n) => serde_json::Value::Number(n),
        Err(_) => serde_json::Value::String(text.to_string()),
    };
    let seed = TsSeed::new(pipeline.input.ts_unit, "ts");
    match seed.deserialize(value) {
        Ok(Ok(Some(ts))) => Ok(ts),
        Ok(Ok(None)) | Err(_) => Err(Rejection::new(Reason::BadTimestamp, format!("ts is `{text}`"))),
        Ok(Err(r)) => Err(r),
    }
}

fn replay_csv(
    mut reader: impl BufRead,
    worker: &mut Worker,
    out: &mut Lines,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let delimiter = delimiter(reader.fill_buf().context("cannot read the CSV table")?);
    let mut table =
        csv::ReaderBuilder::new().has_headers(true).flexible(true).delimiter(delimiter).from_reader(reader);
    let features = worker.feature_names().to_vec();
    let at = columns(table.headers().context("cannot read the CSV header")?, &features)?;
    let placeholders = worker.pipeline().input.topic.placeholders().len();
    let mut values = vec![0.0; features.len()];
    let mut record = csv::StringRecord::new();
    let mut row = 1u64;
    loop {
        row += 1;
        match table.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                counts.read += 1;
                unreadable(counts, format_args!("row {row}: {e}"));
                continue;
            }
        }
        counts.read += 1;
        let device = record.get(0).unwrap_or("").trim();
        if device.split('/').count() != placeholders || device.split('/').any(str::is_empty) {
            unreadable(
                counts,
                format_args!(
                    "row {row}: device `{device}` must have {placeholders} `/`-separated parts, one per \
                     placeholder of {}",
                    worker.pipeline().input.topic
                ),
            );
            continue;
        }
        let input = &worker.pipeline().input.topic;
        let topic = input.render(input, device);
        let ts = ts_cell(worker.pipeline(), record.get(1).unwrap_or(""));
        let parsed = ts.and_then(|ts| {
            for (v, (&i, f)) in values.iter_mut().zip(at.iter().zip(&features)) {
                *v = cell(f, record.get(i).unwrap_or(""), delimiter == b';')?;
            }
            Ok(ts)
        });
        // A row without a receive time: its own `ts` stands in (the future check passes).
        let received_ms = parsed.as_ref().copied().unwrap_or(0);
        worker.replay_row(counts.read, &topic, device, received_ms, parsed.map(|ts| (ts, &values[..])));
        if counts.read.is_multiple_of(BLOCK) {
            collect(std::slice::from_mut(worker), out, counts)?;
        }
    }
    Ok(())
}

fn summary(args: &ReplayArgs, workers: &[Worker], counts: &Counts, seconds: f64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let rate = if seconds > 0.0 { counts.read as f64 / seconds } else { 0.0 };
    let _ = writeln!(
        s,
        "replayed {} input {} from {} in {seconds:.2} s ({rate:.0}/s)",
        counts.read,
        if counts.read == 1 { "message" } else { "messages" },
        args.input.display()
    );
    for worker in workers {
        let t = worker.tally();
        let [ok, warn, alarm] = [State::Ok, State::Warn, State::Alarm].map(|s| t.in_state(s));
        let _ = writeln!(
            s,
            "pipeline {}: {} messages, {} windows (ok {ok}, warn {warn}, alarm {alarm}), {} devices",
            worker.pipeline().name,
            t.messages,
            t.windows,
            worker.devices()
        );
        let rejected: BTreeMap<&str, u64> = t.rejections().map(|(r, n)| (r.as_str(), n)).collect();
        let total: u64 = rejected.values().sum();
        let by_reason: Vec<String> = rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            s,
            "  rejected: {total}{}",
            if by_reason.is_empty() { String::new() } else { format!(" ({})", by_reason.join(", ")) }
        );
        let _ = writeln!(s, "  duplicates skipped: {}, windows not scored: {}", t.duplicates, t.failed);
        if let Some((model, windows, disagreements)) = worker.shadow_tally() {
            let _ = writeln!(
                s,
                "  shadow {model}: {windows} windows, {disagreements} in another state than the live model's"
            );
        }
        let drifting = worker.drifting();
        let _ = writeln!(
            s,
            "  drifting: {}",
            if drifting.is_empty() { "none".to_string() } else { drifting.join(", ") }
        );
    }
    if counts.unrouted > 0 {
        let _ = writeln!(s, "not replayed: {} messages on topics no pipeline takes", counts.unrouted);
    }
    if counts.unreadable > 0 {
        let _ = writeln!(s, "skipped: {} unreadable lines or rows", counts.unreadable);
    }
    let _ = writeln!(s, "wrote {} messages to {}", counts.written, args.output.display());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_header_names_every_feature_once() {
        let features = vec!["a".to_string(), "b".to_string()];
        let header = |h: &str| csv::StringRecord::from(h.split(',').collect::<Vec<_>>());
        assert_eq!(columns(&header("device,ts,b,a"), &features).unwrap(), vec![3, 2]);
        let err = |h: &str| columns(&header(h), &features).unwrap_err().to_string();
        assert!(err("ts,device,a,b").contains("must start with `device,ts`"), "{}", err("ts,device,a,b"));
        assert!(err("device,ts,a").contains("missing for the model's features: b"));
        assert!(err("device,ts,a,b,c").contains("does not read: c"));
        assert!(err("device,ts,a,b,a").contains("does not read") || err("device,ts,a,b,a").contains("twice"));
    }

    #[test]
    fn cells_are_finite_numbers_or_empty() {
        assert_eq!(cell("a", " 1.5 ", false).unwrap(), 1.5);
        assert!(cell("a", "", false).unwrap().is_nan());
        assert_eq!(cell("a", "x", false).unwrap_err().reason, Reason::NonNumeric);
        assert_eq!(cell("a", "inf", false).unwrap_err().reason, Reason::NonFinite);
        assert_eq!(cell("a", "1,5", false).unwrap_err().reason, Reason::NonNumeric);
        assert_eq!(cell("a", "1,5", true).unwrap(), 1.5);
        assert_eq!(cell("a", "1.5", true).unwrap(), 1.5);
    }

    #[test]
    fn a_spreadsheet_export_may_use_semicolons_or_tabs() {
        assert_eq!(delimiter(b"device,ts,a,b\nx;y"), b',');
        assert_eq!(delimiter(b"device;ts;a;b\n1,5;2"), b';');
        assert_eq!(delimiter(b"device\tts\ta\n"), b'\t');
        assert_eq!(delimiter(b"device"), b',');
    }
}
