//! `tf data multi30k`: download the Multi30k task-1 files the translation task reads, each
//! verified against the SHA-256 recorded in `tf_train::data::multi30k`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tf_train::data::download::{DownloadOptions, Fetched, fetch_verified};
use tf_train::data::multi30k;

use crate::progress::bar;

#[derive(Args, Debug)]
pub struct DataArgs {
    /// The data set.
    #[arg(value_enum)]
    dataset: Dataset,
    /// Directory to write the files into (created if missing).
    #[arg(long, default_value = multi30k::DEFAULT_DIR)]
    out: PathBuf,
    /// Base URL the file names are appended to: the dataset's repository, or a mirror of it.
    #[arg(long, env = "TF_MULTI30K_URL", default_value = multi30k::URL)]
    from: String,
    /// Give up on a server that sends nothing for this many seconds (the next run continues
    /// where this one stopped).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dataset {
    /// Multi30k task 1, German–English: train (29,000 sentence pairs), val (1,014),
    /// test_2016_flickr (1,000).
    Multi30k,
}

pub fn run(args: DataArgs) -> Result<()> {
    let Dataset::Multi30k = args.dataset;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!(
            "--timeout must be a positive number of seconds, got {}",
            args.timeout
        );
    }
    let options = DownloadOptions {
        base_url: args.from.clone(),
        stall_timeout: Duration::from_secs_f64(args.timeout),
    };
    println!(
        "Multi30k task 1 from {} into {}",
        args.from,
        args.out.display()
    );
    for file in &multi30k::FILES {
        let progress = bar(file.size);
        progress.set_message(file.name);
        let fetched = fetch_verified(file, &args.out, &options, &mut |n| progress.set_position(n))
            .with_context(|| format!("downloading {}", file.name));
        progress.finish_and_clear();
        let what = match fetched? {
            Fetched::AlreadyPresent => "already there".to_string(),
            Fetched::Downloaded => "downloaded".to_string(),
            Fetched::Resumed { from } => format!("downloaded, continuing after {from} bytes"),
        };
        println!(
            "  {:<24} {:>9} bytes  SHA-256 verified  ({what})",
            file.name, file.size
        );
    }
    println!("\n{}", multi30k::TERMS);
    println!(
        "\nNext: tf train --task translation --out runs/de-en{}",
        if args.out == std::path::Path::new(multi30k::DEFAULT_DIR) {
            String::new()
        } else {
            format!(" --data {}", args.out.display())
        }
    );
    Ok(())
}
