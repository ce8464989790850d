//! `tf bleu`: corpus BLEU of a hypothesis file against a reference file, as sacreBLEU.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tf_train::data::corpus::read_lines;
use tf_train::eval::bleu::corpus_bleu;

#[derive(Args, Debug)]
pub struct BleuArgs {
    /// Reference translations, one a line (UTF-8).
    #[arg(long = "ref")]
    reference: PathBuf,
    /// Hypotheses, one a line, line N translating the same source as reference line N.
    #[arg(long)]
    hyp: PathBuf,
}

pub fn run(args: BleuArgs) -> Result<()> {
    let references = read_lines(&args.reference)?;
    let hypotheses = read_lines(&args.hyp)?;
    let score = corpus_bleu(&hypotheses, &references).with_context(|| {
        format!(
            "{} against {}",
            args.hyp.display(),
            args.reference.display()
        )
    })?;
    println!("{score}");
    Ok(())
}
