//! `cargo xtask newcomer`: the README read as a newcomer would. Clones the committed
//! repository into an empty temporary folder (no `../shared` beside it), serves Multi30k from a
//! local HTTP server in place of the dataset's repository, and runs every command of the
//! README's `sh` blocks in order, each as written, stopping at the first that fails.
//!
//! What the clone gets from outside: `TF_MULTI30K_URL` (the mirror `tf data multi30k` reads),
//! `TF_MAX_MINUTES` (a wall-clock budget for each training run, so the 85-minute run takes a few
//! minutes), `CARGO_INSTALL_ROOT` inside the temporary folder (so `cargo install` leaves the
//! machine's own `~/.cargo/bin` alone, and its `bin` first on `PATH`), and the build cache
//! `CARGO_TARGET_DIR` if one is set (else a cold build, as on a fresh machine).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// This workspace's packages.
const WORKSPACE_PACKAGES: [&str; 8] = [
    "tf-attention",
    "tf-layers",
    "tf-model",
    "tf-train",
    "tf-inspect",
    "tf-cli",
    "tf-tests",
    "xtask",
];

/// How the check runs.
pub struct Newcomer {
    /// The Multi30k files to serve.
    pub data: PathBuf,
    /// Minutes each training run may take.
    pub max_minutes: f64,
    /// Skip the README's `cargo test` commands (CI runs them anyway).
    pub skip_tests: bool,
    /// Keep the temporary folder afterwards.
    pub keep: bool,
}

/// The commands of the README's `sh` blocks, in order: one a line, comments and blank lines
/// left out.
pub fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        let trimmed = line.trim();
        if in_sh {
            if trimmed.starts_with("```") {
                in_sh = false;
            } else if !trimmed.is_empty() && !trimmed.starts_with('#') {
                commands.push(trimmed.to_string());
            }
        } else if trimmed == "```sh" {
            in_sh = true;
        }
    }
    commands
}

/// A `python3 -m http.server` on 127.0.0.1, stopped when dropped.
struct FileServer {
    child: Child,
    url: String,
}

impl FileServer {
    fn start(dir: &Path) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `python3 -m http.server` to serve the data")?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the data server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Newcomer {
    pub fn run(&self, repository: &Path) -> Result<()> {
        ensure!(
            self.data.join("train.de.gz").is_file(),
            "no Multi30k files to serve in {} (--data)",
            self.data.display()
        );
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(repository)
            .output()?;
        if !dirty.stdout.is_empty() {
            println!("note: uncommitted changes are not part of the check (it clones HEAD)");
        }
        let root = std::env::temp_dir().join(format!("tf-newcomer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let clone = root.join("transformer-rs");
        let status = Command::new("git")
            .args(["clone", "--quiet"])
            .arg(repository)
            .arg(&clone)
            .status()?;
        ensure!(status.success(), "git clone failed");
        ensure!(
            !root.join("shared").exists(),
            "the clone has a shared/ beside it"
        );

        let server = FileServer::start(&self.data)?;
        let install = root.join("cargo-install");
        let path = format!(
            "{}:{}",
            install.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let readme = std::fs::read_to_string(clone.join("README.md"))?;
        let commands = readme_commands(&readme);
        ensure!(!commands.is_empty(), "the README has no sh commands");
        println!(
            "{} README commands in {} (data from {})",
            commands.len(),
            clone.display(),
            server.url
        );
        let result = (|| {
            for (i, command) in commands.iter().enumerate() {
                if self.skip_tests && command.starts_with("cargo test") {
                    println!("[{}] skipped: {command}", i + 1);
                    continue;
                }
                println!("[{}] {command}", i + 1);
                let started = Instant::now();
                let output = Command::new("bash")
                    .args(["-o", "pipefail", "-c", command])
                    .current_dir(&clone)
                    .env("PATH", &path)
                    .env("CARGO_INSTALL_ROOT", &install)
                    .env("TF_MULTI30K_URL", &server.url)
                    .env("TF_MAX_MINUTES", self.max_minutes.to_string())
                    .env_remove("TF_MULTI30K")
                    .stdin(Stdio::null())
                    .output()?;
                let tail = |bytes: &[u8]| {
                    let text = String::from_utf8_lossy(bytes);
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(15)..].join("\n")
                };
                println!("{}", tail(&output.stdout));
                if !output.status.success() {
                    bail!(
                        "README command {} failed ({}): {command}\n{}",
                        i + 1,
                        output.status,
                        tail(&output.stderr)
                    );
                }
                println!("    ok in {:.0} s", started.elapsed().as_secs_f64());
            }
            Ok(())
        })();
        drop(server);
        // The clone's crates have the package ids of this checkout's: in a shared build cache
        // their artifacts would pass for this checkout's, with the clone's paths compiled in.
        if std::env::var_os("CARGO_TARGET_DIR").is_some() {
            let packages = WORKSPACE_PACKAGES.iter().flat_map(|p| ["-p", p]);
            Command::new("cargo")
                .args(["clean", "--release", "--quiet"])
                .args(packages)
                .current_dir(&clone)
                .status()?;
        }
        if self.keep || result.is_err() {
            println!("the clone is kept in {}", clone.display());
        } else {
            std::fs::remove_dir_all(&root)?;
        }
        result?;
        println!("every README command worked as written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_sh_blocks_without_comments() {
        let readme = "text\n```sh\ncargo run -- a\n\n# a comment\ntf b | tf c\n```\n\
                      ```text\ntf not-this\n```\n```rust\nfn main() {}\n```\n```sh\nlast\n```\n";
        assert_eq!(
            readme_commands(readme),
            ["cargo run -- a", "tf b | tf c", "last"]
        );
    }

    #[test]
    fn the_readme_has_the_set_up_commands_and_the_quick_start() {
        let readme = include_str!("../../README.md");
        let commands = readme_commands(readme);
        assert!(
            commands[0].starts_with("cargo run --release -- train"),
            "{commands:?}"
        );
        assert_eq!(commands[1], "cargo test --release --workspace");
        for needed in [
            "tf data multi30k",
            "tf train --task translation",
            "tf translate",
        ] {
            assert!(
                commands.iter().any(|c| c.contains(needed)),
                "{needed} missing from {commands:?}"
            );
        }
    }
}
