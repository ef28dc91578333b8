//! What a person (or a script) sees: a progress bar while loading, then a summary.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::store::limiter::Limiter;
use crate::store::stats::{Progress, RequestStats, round3};

/// The end-of-run summary; `--json` prints exactly this object on stdout.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// What the store holds of the data set: `created + already_present + updated`.
    pub stored: u64,
    /// New in the store.
    pub created: u64,
    /// There already: a conditional create that matched, a transaction entry answered 200
    /// for its `ifNoneExist`, a resource found by its source-key tag.
    pub already_present: u64,
    /// Written over what the store held (update mode).
    pub updated: u64,
    pub failed: u64,
    /// Resources never sent: the run stopped early, or something they refer to was not stored.
    pub not_sent: u64,
    /// Why they were not sent, with how many each.
    pub not_sent_reasons: BTreeMap<String, u64>,
    pub requests: u64,
    pub retries: u64,
    /// Requests the store throttled (429): they waited, they did not fail.
    pub throttled_requests: u64,
    /// Time every worker spent held back while the store throttled.
    pub throttled_seconds: f64,
    pub elapsed_seconds: f64,
    pub resources_per_second: f64,
    pub requests_per_second: f64,
    pub latency_ms: Latency,
    pub status_counts: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub seed: Option<u64>,
    pub mode: String,
    pub workers: u32,
    pub target: String,
    pub interrupted: bool,
    /// Why the run stopped early, when it did for a reason other than Ctrl-C.
    pub fatal_error: Option<String>,
    pub failed_file: Option<String>,
    /// Why the `--failed` file does not hold every failure, when it does not.
    pub failed_file_error: Option<String>,
}

/// `not_sent_reasons` keys.
pub const NOT_SENT_STOPPED: &str = "the run stopped before sending them";
pub const NOT_SENT_UNSTORED_REFERENCE: &str = "they refer to a resource that was not stored";

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn from_stats(stats: &RequestStats) -> Self {
        let mean = if stats.latency_us.is_empty() {
            0.0
        } else {
            stats.latency_us.mean() / 1000.0
        };
        Self {
            p50: stats.latency_ms(0.50),
            p90: stats.latency_ms(0.90),
            p99: stats.latency_ms(0.99),
            max: stats.latency_ms(1.0),
            mean: round3(mean),
        }
    }
}

impl Summary {
    pub fn print_text(&self) {
        let mut out = String::new();
        let line = |out: &mut String, label: &str, value: String| {
            out.push_str(&format!("  {label:<16}{value}\n"));
        };
        out.push_str("Summary:\n");
        line(&mut out, "Target:", self.target.clone());
        line(
            &mut out,
            "Mode:",
            format!("{} with {} workers", self.mode, self.workers),
        );
        line(
            &mut out,
            "Stored:",
            format!(
                "{} ({} created, {} already present, {} updated)",
                self.stored, self.created, self.already_present, self.updated
            ),
        );
        line(&mut out, "Failed:", self.failed.to_string());
        if self.not_sent > 0 {
            let reasons: Vec<String> = self
                .not_sent_reasons
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(reason, n)| format!("{n}: {reason}"))
                .collect();
            line(
                &mut out,
                "Not sent:",
                format!("{} ({})", self.not_sent, reasons.join("; ")),
            );
        }
        line(&mut out, "Requests:", self.requests.to_string());
        line(&mut out, "Retries:", self.retries.to_string());
        if self.throttled_requests > 0 {
            line(
                &mut out,
                "Throttled:",
                format!(
                    "{} requests answered 429; {:.1} s held back waiting for the quota",
                    self.throttled_requests, self.throttled_seconds
                ),
            );
        }
        line(
            &mut out,
            "Elapsed:",
            format!("{:.3} s", self.elapsed_seconds),
        );
        line(
            &mut out,
            "Resources/s:",
            format!("{:.1}", self.resources_per_second),
        );
        line(
            &mut out,
            "Requests/s:",
            format!("{:.1}", self.requests_per_second),
        );
        if let Some(seed) = self.seed {
            line(&mut out, "Seed:", seed.to_string());
        }
        out.push_str("\nLatency (ms):\n");
        let l = &self.latency_ms;
        out.push_str(&format!(
            "  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}\n",
            l.p50, l.p90, l.p99, l.max, l.mean
        ));
        if !self.status_counts.is_empty() {
            out.push_str("\nStatus code distribution:\n");
            for (status, n) in &self.status_counts {
                out.push_str(&format!("  [{status}] {n} responses\n"));
            }
        }
        if !self.errors.is_empty() {
            out.push_str("\nError distribution:\n");
            for (kind, n) in &self.errors {
                out.push_str(&format!("  [{n}] {kind}\n"));
            }
        }
        // A file that could not be written was said so when it happened, with its path.
        if let (Some(path), None) = (&self.failed_file, &self.failed_file_error) {
            let kept = self.failed
                + self
                    .not_sent_reasons
                    .get(NOT_SENT_UNSTORED_REFERENCE)
                    .unwrap_or(&0);
            if kept > 0 {
                out.push_str(&format!(
                    "\n{kept} resources that were not stored are in {path}; fix them and load it again with --input {path}\n",
                ));
            }
        }
        if let Some(reason) = &self.fatal_error {
            out.push_str(&format!("\nStopped early: {reason}\n"));
        } else if self.interrupted {
            out.push_str(
                "\nInterrupted: re-run the same command to finish; nothing will be stored twice.\n",
            );
        }
        eprint!("{out}");
    }
}

/// Says on stderr why resources were not stored, with the store's own words: the first few
/// in full, then only how to see the rest, so that a run of failures cannot flood a terminal.
pub struct FailureLog {
    reporter: Arc<ProgressReporter>,
    shown: std::sync::atomic::AtomicUsize,
    failed_file: Option<String>,
}

impl FailureLog {
    const SHOWN: usize = 10;

    pub fn new(reporter: Arc<ProgressReporter>, failed_file: Option<String>) -> Self {
        Self {
            reporter,
            shown: Default::default(),
            failed_file,
        }
    }

    /// `what` names the resource (its key, and where it was read from).
    pub fn note(&self, what: &str, reason: &str) {
        let n = self
            .shown
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n < Self::SHOWN {
            self.reporter
                .println(&format!("not stored: {what}: {reason}"));
        } else if n == Self::SHOWN {
            let rest = match &self.failed_file {
                Some(path) => format!("further failures are in {path}"),
                None => "further failures are only counted; add --failed PATH to keep them".into(),
            };
            self.reporter.println(&format!("not stored: ...; {rest}"));
        }
    }
}

/// The bar's look. `{per_sec:0}` is the rate rounded to a whole number (`19,828/s`): by default
/// indicatif shows four decimals.
/// While the store throttles, an ETA means nothing (it climbs to days): the bar says why it
/// waits instead.
fn bar_style(has_total: bool, throttled: bool) -> ProgressStyle {
    let template = match (has_total, throttled) {
        (true, false) => {
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} stored {msg} ({per_sec:0}, ETA {eta})"
        }
        (true, true) => {
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} stored {msg} (throttled by the store: waiting for its quota)"
        }
        (false, false) => "{spinner} [{elapsed_precise}] {pos} stored {msg} ({per_sec:0})",
        (false, true) => {
            "{spinner} [{elapsed_precise}] {pos} stored {msg} (throttled by the store: waiting for its quota)"
        }
    };
    ProgressStyle::with_template(template)
        .expect("static template is valid")
        .progress_chars("=> ")
}

/// A progress bar on stderr when it is a terminal: resources stored of the total, rate, ETA.
pub struct ProgressReporter {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressReporter {
    pub fn start(
        total: Option<u64>,
        progress: Arc<Progress>,
        limiter: Arc<Limiter>,
        enabled: bool,
    ) -> Self {
        let visible = enabled && std::io::stderr().is_terminal() && !crate::logs::requests_logged();
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::no_length(),
        };
        if !visible {
            bar.set_draw_target(ProgressDrawTarget::hidden());
            return Self { bar, ticker: None };
        }
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(bar_style(total.is_some(), false));
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut throttled = false;
            loop {
                if limiter.is_throttled() != throttled {
                    throttled = !throttled;
                    ticking.set_style(bar_style(total.is_some(), throttled));
                }
                ticking.set_position(progress.stored());
                let (failed, not_sent) = (progress.failed(), progress.not_sent());
                if failed + not_sent > 0 {
                    ticking.set_message(format!("{failed} failed, {not_sent} not sent"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            bar,
            ticker: Some(ticker),
        }
    }

    /// Prints a line above the bar without tearing it.
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use indicatif::TermLike;

    use super::*;

    fn summary(stats: &RequestStats, elapsed_seconds: f64, stored: u64) -> Summary {
        Summary {
            stored,
            created: stored,
            already_present: 0,
            updated: 0,
            failed: 0,
            not_sent: 0,
            not_sent_reasons: BTreeMap::new(),
            requests: stats.requests,
            retries: 0,
            throttled_requests: 0,
            throttled_seconds: 0.0,
            elapsed_seconds: round3(elapsed_seconds),
            resources_per_second: round3(stored as f64 / elapsed_seconds),
            requests_per_second: round3(stats.requests as f64 / elapsed_seconds),
            latency_ms: Latency::from_stats(stats),
            status_counts: BTreeMap::from([("201".to_owned(), stats.requests)]),
            errors: BTreeMap::new(),
            seed: Some(1),
            mode: "create".into(),
            workers: 1,
            target: "t".into(),
            interrupted: false,
            fatal_error: None,
            failed_file: None,
            failed_file_error: None,
        }
    }

    /// A script reading `--json` gets one number type per key, whatever the values: floats
    /// stay floats at 0.0 and at whole values, counts stay integers.
    #[test]
    fn json_numbers_keep_their_type() {
        const FLOATS: [&str; 4] = [
            "elapsed_seconds",
            "resources_per_second",
            "requests_per_second",
            "throttled_seconds",
        ];
        let mut answered = RequestStats::default();
        answered.record_answer(201, Duration::from_millis(2));
        for (stats, elapsed, stored) in [
            (RequestStats::default(), 1e-9, 0),
            (answered.clone(), 2.0, 4),
            (answered, 0.5, 1000),
        ] {
            let json = serde_json::to_value(summary(&stats, elapsed, stored)).unwrap();
            for (key, value) in json.as_object().unwrap() {
                match value {
                    serde_json::Value::Number(n) if FLOATS.contains(&key.as_str()) => {
                        assert!(n.is_f64(), "{key} = {n} is not a float")
                    }
                    serde_json::Value::Number(n) => assert!(n.is_u64(), "{key} = {n}"),
                    _ => {}
                }
            }
            for (key, value) in json["latency_ms"].as_object().unwrap() {
                assert!(value.is_f64(), "latency_ms.{key} = {value}");
            }
            for value in json["status_counts"].as_object().unwrap().values() {
                assert!(value.is_u64());
            }
            // Exactly as printed, too.
            let text = serde_json::to_string(&json).unwrap();
            assert!(!text.contains("\"elapsed_seconds\":0,"), "{text}");
        }
    }

    /// A terminal that keeps what is drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, line: &str) -> io::Result<()> {
            self.write_str(&format!("{line}\n"))
        }
        fn write_str(&self, text: &str) -> io::Result<()> {
            self.0.lock().unwrap().push_str(text);
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What the bar draws at 19,827 stored, on a terminal that keeps it.
    fn drawn(total: Option<u64>, throttled: bool) -> String {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            total,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_style(bar_style(total.is_some(), throttled));
        bar.set_position(19_827);
        bar.force_draw();
        screen.0.lock().unwrap().clone()
    }

    #[test]
    fn the_rate_is_a_whole_number() {
        for total in [Some(100_000), None] {
            let drawn = drawn(total, false);
            let (_, after) = drawn.split_once('(').expect("the rate is drawn");
            let (rate, _) = after.split_once("/s").expect("the rate is drawn");
            assert!(!rate.is_empty(), "{drawn}");
            assert!(
                rate.chars().all(|c| c.is_ascii_digit() || c == ',') || rate == "inf",
                "{drawn}"
            );
        }
    }

    #[test]
    fn a_throttled_load_says_so_instead_of_an_eta() {
        for total in [Some(100_000), None] {
            let drawn = drawn(total, true);
            assert!(drawn.contains("throttled by the store"), "{drawn}");
            assert!(!drawn.contains("ETA"), "{drawn}");
        }
    }
}
