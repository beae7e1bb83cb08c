//! Progress of long work: a bar with rate and ETA on a terminal, plain log lines (about
//! every 5 %, and at the end) otherwise.

use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: String,
    unit: String,
    total: usize,
    start: Instant,
}

impl Progress {
    /// `label` names the work ("similarity"), `unit` what is counted ("samples").
    pub fn new(label: &str, unit: &str, total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            let template = format!(
                "{{spinner}} {label} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}} {{msg}}"
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(&template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            label: label.to_string(),
            unit: unit.to_string(),
            total,
            start: Instant::now(),
        }
    }

    /// `done` of the total are finished; `msg` adds detail (e.g. "loss 2.31").
    pub fn set(&self, done: usize, msg: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(msg.to_string());
            }
            None => {
                let step = (self.total / 20).max(1);
                if done.is_multiple_of(step) || done == self.total {
                    let secs = self.start.elapsed().as_secs_f64().max(1e-9);
                    let rate = done as f64 / secs;
                    let eta = (self.total.saturating_sub(done)) as f64 / rate.max(1e-9);
                    eprintln!(
                        "{}: {done}/{} {}, {rate:.2}/s, ETA {eta:.0}s {msg}",
                        self.label, self.total, self.unit
                    );
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
