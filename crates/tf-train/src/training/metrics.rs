//! The metrics log: `metrics.csv` in the model directory, one row per logged training step and
//! per validation, appended (a resumed run continues the same file).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::atomic::write_atomic;

/// Column names, in order.
pub const HEADER: &str =
    "step,split,loss,lr,token_accuracy,exact_match,target_tokens_per_sec,elapsed_secs,epoch,bleu";

/// One row of the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsRow {
    /// Optimizer step.
    pub step: usize,
    /// `train`, `valid`, or `average` (the mean of the last checkpoints, translation).
    pub split: &'static str,
    /// Mean label-smoothed loss per target token.
    pub loss: f64,
    /// Learning rate of the step.
    pub lr: f64,
    /// Share of target tokens decoded right (validation only).
    pub token_accuracy: Option<f64>,
    /// Share of sequences decoded exactly (validation only).
    pub exact_match: Option<f64>,
    /// Training throughput (train rows only).
    pub target_tokens_per_sec: Option<f64>,
    /// Wall time since the run began.
    pub elapsed_secs: f64,
    /// Epochs completed (translation only).
    pub epoch: Option<usize>,
    /// Validation BLEU, greedy (translation only).
    pub bleu: Option<f64>,
}

/// The rows of a metrics log (what `tf plot` draws).
///
/// # Errors
/// If the file cannot be read, or a row is not one this module writes.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let text = crate::error::read_to_string(path)?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(Error::format(
            path,
            "is not a metrics log",
            "its first line is not the header",
        ));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            parse_row(line).ok_or_else(|| {
                Error::format(
                    path,
                    "is not a metrics log",
                    format!("line {} is not a row", i + 2),
                )
            })
        })
        .collect()
}

/// One CSV row, as [`MetricsLog::append`] writes it.
fn parse_row(line: &str) -> Option<MetricsRow> {
    let fields: Vec<&str> = line.split(',').collect();
    if fields.len() != HEADER.split(',').count() {
        return None;
    }
    let number = |s: &str| s.parse::<f64>().ok();
    let optional = |s: &str| {
        if s.is_empty() {
            Some(None)
        } else {
            number(s).map(Some)
        }
    };
    Some(MetricsRow {
        step: fields[0].parse().ok()?,
        split: ["train", "valid", "average"]
            .into_iter()
            .find(|&s| s == fields[1])?,
        loss: number(fields[2])?,
        lr: number(fields[3])?,
        token_accuracy: optional(fields[4])?,
        exact_match: optional(fields[5])?,
        target_tokens_per_sec: optional(fields[6])?,
        elapsed_secs: number(fields[7])?,
        epoch: if fields[8].is_empty() {
            None
        } else {
            Some(fields[8].parse().ok()?)
        },
        bleu: optional(fields[9])?,
    })
}

/// Appends rows to a CSV file, writing the header when the file is new.
pub struct MetricsLog {
    out: BufWriter<File>,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping the rows of steps after `step` (those a
    /// resumed run is about to log again).
    pub fn open_after(path: &Path, step: usize) -> Result<Self> {
        if path.is_file() {
            let text = crate::error::read_to_string(path)?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    // A row cut short by a full disk or a kill has too few fields: dropped too.
                    let fields: Vec<&str> = line.split(',').collect();
                    *line == HEADER
                        || (fields.len() == HEADER.split(',').count()
                            && fields[0]
                                .parse::<usize>()
                                .is_ok_and(|row_step| row_step <= step))
                })
                .map(|line| format!("{line}\n"))
                .collect();
            if kept != text {
                write_atomic(path, kept.as_bytes())?;
            }
        }
        Self::open(path)
    }

    /// Opens `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| Error::io("open", path, err))?;
        let is_new = file
            .metadata()
            .map_err(|err| Error::io("inspect", path, err))?
            .len()
            == 0;
        let mut log = Self {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
        };
        if is_new {
            log.write_line(HEADER)?;
        }
        Ok(log)
    }

    /// Appends one row and flushes it.
    pub fn append(&mut self, row: &MetricsRow) -> Result<()> {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        let line = format!(
            "{},{},{:.6},{:.6e},{},{},{},{:.1},{},{}",
            row.step,
            row.split,
            row.loss,
            row.lr,
            opt(row.token_accuracy),
            opt(row.exact_match),
            row.target_tokens_per_sec
                .map(|v| format!("{v:.0}"))
                .unwrap_or_default(),
            row.elapsed_secs,
            row.epoch.map(|e| e.to_string()).unwrap_or_default(),
            row.bleu.map(|b| format!("{b:.2}")).unwrap_or_default(),
        );
        self.write_line(&line)
    }

    /// Writes one line and flushes it, naming the file on failure.
    fn write_line(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(|err| Error::io("write", &self.path, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_append_under_one_header() {
        let path = std::env::temp_dir().join(format!("tf-metrics-{}.csv", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let row = MetricsRow {
            step: 5,
            split: "valid",
            loss: 0.5,
            lr: 1e-3,
            exact_match: Some(1.0),
            ..Default::default()
        };
        MetricsLog::open(&path).unwrap().append(&row).unwrap();
        MetricsLog::open(&path).unwrap().append(&row).unwrap();
        assert_eq!(read_metrics(&path).unwrap(), [row.clone(), row.clone()]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines[1], "5,valid,0.500000,1.000000e-3,,1.000000,,0.0,,");
        std::fs::remove_file(&path).unwrap();
    }
}
