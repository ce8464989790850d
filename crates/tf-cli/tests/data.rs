//! `tf data multi30k` against a local HTTP server, and `tf train --task translation` without
//! data. (The download's failure modes, file by file, are tested in tf-train's `download`.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tf_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(args)
        .current_dir(dir)
        .env_remove("TF_MULTI30K")
        .env_remove("TF_MULTI30K_URL")
        .output()
        .expect("tf runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serves the files of `root` at `http://127.0.0.1:PORT/NAME` (404 for anything else) and
/// returns that base URL.
fn serve(root: Option<PathBuf>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let name = request
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let file = root.as_ref().and_then(|r| std::fs::read(r.join(name)).ok());
            let (status, body) = match file {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", Vec::new()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[test]
fn downloads_multi30k_verified_then_finds_it_there() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/multi30k");
    if !shared.is_dir() {
        eprintln!(
            "skipped: the shared copy to serve is beside the repository on our machines only"
        );
        return;
    }
    let work = temp("fetch");
    let url = serve(Some(shared.clone()));
    let out = tf_in(&work, &["data", "multi30k", "--from", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert_eq!(
        printed.matches("SHA-256 verified  (downloaded)").count(),
        6,
        "{printed}"
    );
    assert!(printed.contains("Cite both papers") || printed.contains("cite both papers"));
    assert!(printed.contains("Next: tf train --task translation --out runs/de-en\n"));
    for name in ["train.de.gz", "val.en.gz", "test_2016_flickr.de.gz"] {
        let fetched = std::fs::read(work.join("data/multi30k").join(name)).unwrap();
        assert_eq!(fetched, std::fs::read(shared.join(name)).unwrap(), "{name}");
    }
    let again = tf_in(&work, &["data", "multi30k", "--from", &url]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout).matches("(already there)").count(), 6);
}

#[test]
fn a_server_without_the_files_is_an_error_and_nothing_is_written() {
    let work = temp("missing");
    let url = serve(None);
    let out = tf_in(
        &work,
        &["data", "multi30k", "--from", &url, "--out", "here"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with("tf: error: downloading train.de.gz"),
        "{err}"
    );
    assert!(err.contains("HTTP 404"), "{err}");
    let left: Vec<_> = std::fs::read_dir(work.join("here"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn translation_without_data_names_the_command_that_gets_it() {
    let work = temp("no-data");
    let out = tf_in(
        &work,
        &["train", "--task", "translation", "--out", "runs/de-en"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("data/multi30k holds no train.de, train.en, val.de, val.en")
            && err.contains("run `tf data multi30k` to download Multi30k there"),
        "{err}"
    );
    assert!(!work.join("runs").exists(), "nothing was created");
    let elsewhere = tf_in(
        &work,
        &[
            "train",
            "--task",
            "translation",
            "--out",
            "x",
            "--data",
            "corpus",
        ],
    );
    assert!(
        text(&elsewhere.stderr).contains("run `tf data multi30k --out corpus`"),
        "{}",
        text(&elsewhere.stderr)
    );
}
