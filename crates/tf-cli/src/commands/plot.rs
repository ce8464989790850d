//! `tf plot`: learning curves of one run or several on one picture.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use tf_inspect::curves::{RunMetrics, write_curves};
use tf_train::ModelDir;
use tf_train::training::metrics::read_metrics;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Model directories written by `tf train` (each one's metrics.csv); give several to compare.
    #[arg(long = "model", required = true)]
    models: Vec<PathBuf>,
    /// Where the picture goes (STEM.png and STEM.svg) [default: MODEL/curves for one run,
    /// curves in the current directory for several].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let runs = args
        .models
        .iter()
        .map(|dir| metrics_of(dir))
        .collect::<Result<Vec<_>>>()?;
    let stem = match (&args.out, args.models.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.join("curves"),
        (None, _) => PathBuf::from("curves"),
    };
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    for path in write_curves(&stem, &names.join(" · "), &runs)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The metrics of the run in `dir`, named after the directory.
pub fn metrics_of(dir: &Path) -> Result<RunMetrics> {
    let path = ModelDir::new(dir).metrics_path();
    if !path.is_file() {
        bail!(
            "{} has no metrics.csv: is it a directory `tf train` wrote?",
            dir.display()
        );
    }
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(RunMetrics {
        name,
        rows: read_metrics(&path)?,
    })
}
