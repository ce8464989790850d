//! Verified downloads: a file is fetched over HTTP(S) into `NAME.part` beside its destination,
//! checked against the size and SHA-256 recorded for it, and only then renamed to `NAME`. An
//! interrupted download (a dropped connection, a stalled server, a killed program) leaves the
//! `.part`, which the next attempt continues with an HTTP range request, or restarts when the
//! server does not serve ranges. A file with the wrong checksum is deleted, never kept under
//! its real name; a file already at the destination is verified and left alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A file published at `BASE_URL/NAME`, with the size and SHA-256 it must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name, both under the base URL and in the destination directory.
    pub name: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: &'static str,
}

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// The URL the file names are appended to (with or without a trailing `/`).
    pub base_url: String,
    /// Give up on a server that sends nothing for this long (connecting or reading).
    pub stall_timeout: Duration,
}

/// What [`fetch_verified`] did for a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// It was already at the destination with the right checksum: nothing was fetched.
    AlreadyPresent,
    /// It was fetched whole.
    Downloaded,
    /// An earlier attempt's first `from` bytes were kept and the rest fetched.
    Resumed {
        /// Bytes kept from the earlier attempt.
        from: u64,
    },
}

/// Fetches `file` into `dir/NAME` (creating `dir`), verified against its size and SHA-256;
/// `progress` hears the bytes held so far after each chunk.
///
/// # Errors
/// An HTTP error status, a connection that fails, closes early or stalls for
/// [`DownloadOptions::stall_timeout`] (the `.part` is kept for the next attempt to continue),
/// content with the wrong size or checksum (the `.part` is deleted), a file already at the
/// destination that is not the published one (left untouched), or a directory that cannot be
/// written.
pub fn fetch_verified(
    file: &RemoteFile,
    dir: &Path,
    options: &DownloadOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Fetched> {
    let destination = dir.join(file.name);
    if destination.exists() {
        let digest = sha256_of_file(&destination)?;
        if digest == file.sha256 {
            return Ok(Fetched::AlreadyPresent);
        }
        return Err(Error::invalid(format!(
            "{} exists but is not the published file (SHA-256 {digest}, expected {}); move it \
             away and run again",
            destination.display(),
            file.sha256
        )));
    }
    fs::create_dir_all(dir).map_err(|err| Error::io("create", dir, err))?;
    let part = part_path(&destination);
    let held = match fs::metadata(&part) {
        Ok(meta) if meta.len() <= file.size => meta.len(),
        // Longer than the file can be: not something a resume can continue.
        Ok(_) => {
            fs::remove_file(&part).map_err(|err| Error::io("remove", &part, err))?;
            0
        }
        Err(_) => 0,
    };
    let url = format!("{}/{}", options.base_url.trim_end_matches('/'), file.name);
    // A whole `.part` is what a run killed between download and rename leaves.
    let kept = if held == file.size {
        held
    } else {
        receive(&url, &part, held, options, progress)?
    };
    let size = fs::metadata(&part)
        .map_err(|err| Error::io("read", &part, err))?
        .len();
    let digest = sha256_of_file(&part)?;
    if size != file.size || digest != file.sha256 {
        fs::remove_file(&part).map_err(|err| Error::io("remove", &part, err))?;
        return Err(Error::invalid(format!(
            "{url} is not the published file: {size} bytes with SHA-256 {digest}, expected {} \
             bytes with SHA-256 {}; nothing was kept",
            file.size, file.sha256
        )));
    }
    File::open(&part)
        .and_then(|f| f.sync_all())
        .and_then(|()| fs::rename(&part, &destination))
        .and_then(|()| File::open(dir)?.sync_all())
        .map_err(|err| Error::io("write", &destination, err))?;
    Ok(match kept {
        0 => Fetched::Downloaded,
        from => Fetched::Resumed { from },
    })
}

/// `NAME.part`, where a download in progress is written.
pub fn part_path(destination: &Path) -> PathBuf {
    let mut name = destination.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    destination.with_file_name(name)
}

/// Receives `url` into `part`, continuing after its first `held` bytes when the server serves
/// the range (else from the start); returns how many bytes of the earlier attempt were kept.
fn receive(
    url: &str,
    part: &Path,
    held: u64,
    options: &DownloadOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(options.stall_timeout)
        .timeout_read(options.stall_timeout)
        .build();
    let mut request = agent.get(url);
    if held > 0 {
        request = request.set("Range", &format!("bytes={held}-"));
    }
    let response = request.call().map_err(|err| match err {
        ureq::Error::Status(code, response) => Error::invalid(format!(
            "{url}: the server answered HTTP {code} {}",
            response.status_text()
        )),
        // ureq's message names the URL.
        ureq::Error::Transport(transport) => Error::invalid(format!("cannot download {transport}")),
    })?;
    let kept = if response.status() == 206 { held } else { 0 };
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(kept == 0)
        .append(kept > 0)
        .open(part)
        .map_err(|err| Error::io("write", part, err))?;
    let mut body = response.into_reader();
    let mut total = kept;
    let mut buffer = vec![0u8; 64 * 1024];
    progress(total);
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                let why = match err.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
                        "the server sent nothing for {} s",
                        options.stall_timeout.as_secs_f64()
                    ),
                    _ => err.to_string(),
                };
                return Err(Error::invalid(format!(
                    "{url}: the download broke off after {total} bytes ({why}); run the same \
                     command again to continue it"
                )));
            }
        };
        out.write_all(&buffer[..n])
            .map_err(|err| Error::io("write", part, err))?;
        total += n as u64;
        progress(total);
    }
    Ok(kept)
}

/// SHA-256 of a file's content, lowercase hex.
pub fn sha256_of_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|err| Error::io("read", path, err))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|err| Error::io("read", path, err))?;
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_dir;
    use std::io::BufRead;
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// How the test server answers a request for the file.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// The file, honouring range requests.
        Serve,
        /// The file, always whole (`200`), ignoring range requests.
        ServeWithoutRanges,
        /// Promises the whole file, sends its first `n` bytes, closes.
        CloseAfter(usize),
        /// Promises the whole file, sends its first `n` bytes, then nothing.
        StallAfter(usize),
        /// 404.
        NotFound,
    }

    /// A one-file HTTP/1.1 server on 127.0.0.1 that records the `Range` header of each request.
    struct Server {
        base_url: String,
        ranges: Arc<Mutex<Vec<Option<String>>>>,
    }

    impl Server {
        fn start(content: Vec<u8>, behaviour: Behaviour) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base_url = format!("http://{}/files", listener.local_addr().unwrap());
            let ranges = Arc::new(Mutex::new(Vec::new()));
            let seen = ranges.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    let range = read_range_header(&stream);
                    seen.lock().unwrap().push(range.clone());
                    answer(stream, &content, behaviour, range);
                }
            });
            Self { base_url, ranges }
        }

        fn options(&self) -> DownloadOptions {
            DownloadOptions {
                base_url: self.base_url.clone(),
                stall_timeout: Duration::from_millis(500),
            }
        }

        fn ranges(&self) -> Vec<Option<String>> {
            self.ranges.lock().unwrap().clone()
        }
    }

    fn read_range_header(stream: &TcpStream) -> Option<String> {
        let mut reader = io::BufReader::new(stream);
        let mut range = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                return range;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                range = Some(value.trim().to_string());
            }
        }
    }

    fn answer(mut stream: TcpStream, content: &[u8], behaviour: Behaviour, range: Option<String>) {
        let start = match (behaviour, &range) {
            (Behaviour::Serve, Some(range)) => range.trim_end_matches('-').parse().unwrap(),
            _ => 0,
        };
        let body = &content[start..];
        let head = match behaviour {
            Behaviour::NotFound => {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            _ if start > 0 => format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes \
                 {start}-{}/{}\r\nConnection: close\r\n\r\n",
                body.len(),
                content.len() - 1,
                content.len()
            ),
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
        };
        let _ = stream.write_all(head.as_bytes());
        match behaviour {
            Behaviour::CloseAfter(n) => {
                let _ = stream.write_all(&body[..n]);
            }
            Behaviour::StallAfter(n) => {
                let _ = stream.write_all(&body[..n]);
                let _ = stream.flush();
                std::thread::sleep(Duration::from_secs(5));
            }
            _ => {
                let _ = stream.write_all(body);
            }
        }
    }

    fn content() -> Vec<u8> {
        (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The manifest entry of `content`, leaked to get the `'static` strings a manifest has.
    fn remote(content: &[u8]) -> RemoteFile {
        let digest = format!("{:x}", Sha256::digest(content));
        RemoteFile {
            name: "train.de.gz",
            size: content.len() as u64,
            sha256: Box::leak(digest.into_boxed_str()),
        }
    }

    fn fetch(file: &RemoteFile, dir: &Path, server: &Server) -> Result<Fetched> {
        fetch_verified(file, dir, &server.options(), &mut |_| {})
    }

    #[test]
    fn fetches_verifies_and_then_leaves_the_file_alone() {
        let dir = temp_dir("download-fresh");
        let content = content();
        let server = Server::start(content.clone(), Behaviour::Serve);
        let file = remote(&content);
        let mut seen = Vec::new();
        let fetched = fetch_verified(&file, &dir, &server.options(), &mut |n| seen.push(n));
        assert_eq!(fetched.unwrap(), Fetched::Downloaded);
        assert_eq!(fs::read(dir.join(file.name)).unwrap(), content);
        assert!(!part_path(&dir.join(file.name)).exists());
        assert_eq!(seen.last(), Some(&(content.len() as u64)));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        // Present and verified: no second request.
        assert_eq!(
            fetch(&file, &dir, &server).unwrap(),
            Fetched::AlreadyPresent
        );
        assert_eq!(server.ranges(), vec![None]);
    }

    #[test]
    fn a_connection_closed_early_keeps_the_part_and_the_next_attempt_continues_it() {
        let dir = temp_dir("download-truncated");
        let content = content();
        let file = remote(&content);
        let cut = Server::start(content.clone(), Behaviour::CloseAfter(70_000));
        let err = fetch(&file, &dir, &cut).unwrap_err().to_string();
        assert!(err.contains("broke off after 70000 bytes"), "{err}");
        assert!(!dir.join(file.name).exists());
        assert_eq!(
            fs::metadata(part_path(&dir.join(file.name))).unwrap().len(),
            70_000
        );

        let whole = Server::start(content.clone(), Behaviour::Serve);
        let fetched = fetch(&file, &dir, &whole).unwrap();
        assert_eq!(fetched, Fetched::Resumed { from: 70_000 });
        assert_eq!(whole.ranges(), vec![Some("70000-".to_string())]);
        assert_eq!(fs::read(dir.join(file.name)).unwrap(), content);
        assert!(!part_path(&dir.join(file.name)).exists());
    }

    #[test]
    fn a_server_without_ranges_makes_the_attempt_start_over() {
        let dir = temp_dir("download-no-ranges");
        let content = content();
        let file = remote(&content);
        fs::write(part_path(&dir.join(file.name)), &content[..1000]).unwrap();
        let server = Server::start(content.clone(), Behaviour::ServeWithoutRanges);
        assert_eq!(fetch(&file, &dir, &server).unwrap(), Fetched::Downloaded);
        assert_eq!(fs::read(dir.join(file.name)).unwrap(), content);
    }

    #[test]
    fn a_whole_part_left_by_a_killed_run_is_verified_and_published() {
        let dir = temp_dir("download-whole-part");
        let content = content();
        let file = remote(&content);
        fs::write(part_path(&dir.join(file.name)), &content).unwrap();
        let server = Server::start(content.clone(), Behaviour::Serve);
        let fetched = fetch(&file, &dir, &server).unwrap();
        assert_eq!(fetched, Fetched::Resumed { from: file.size });
        assert!(server.ranges().is_empty(), "nothing was requested");
        assert_eq!(fs::read(dir.join(file.name)).unwrap(), content);
    }

    #[test]
    fn a_wrong_checksum_keeps_nothing() {
        let dir = temp_dir("download-checksum");
        let content = content();
        let mut other = content.clone();
        other[123] ^= 1;
        let server = Server::start(other, Behaviour::Serve);
        let err = fetch(&remote(&content), &dir, &server)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the published file"), "{err}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "nothing is left");
    }

    #[test]
    fn a_404_is_an_error_that_writes_nothing() {
        let dir = temp_dir("download-404");
        let server = Server::start(content(), Behaviour::NotFound);
        let err = fetch(&remote(&content()), &dir, &server)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP 404"), "{err}");
        assert!(err.contains("/files/train.de.gz"), "{err}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_stalled_server_times_out_and_nothing_is_published() {
        let dir = temp_dir("download-stall");
        let content = content();
        let file = remote(&content);
        let server = Server::start(content.clone(), Behaviour::StallAfter(10_000));
        let started = Instant::now();
        let err = fetch(&file, &dir, &server).unwrap_err().to_string();
        assert!(err.contains("sent nothing for 0.5 s"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "gave up in time"
        );
        assert!(!dir.join(file.name).exists());
    }

    #[test]
    fn a_different_file_already_there_is_refused_and_kept() {
        let dir = temp_dir("download-foreign");
        let content = content();
        let file = remote(&content);
        fs::write(dir.join(file.name), b"the user's own file").unwrap();
        let server = Server::start(content, Behaviour::Serve);
        let err = fetch(&file, &dir, &server).unwrap_err().to_string();
        assert!(
            err.contains("exists but is not the published file"),
            "{err}"
        );
        assert_eq!(
            fs::read(dir.join(file.name)).unwrap(),
            b"the user's own file"
        );
        assert!(server.ranges().is_empty(), "nothing was requested");
    }
}
