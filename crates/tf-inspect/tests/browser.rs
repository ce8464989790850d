//! The attention viewer in a real browser: headless Chromium opens the page from disk, runs its
//! script, and the DOM it leaves is checked against the embedded weights; a screenshot is saved.
//!
//! Chromium is Debian's `chromium` (`.ci/run` installs it), or the program in `TF_CHROMIUM`.
//! Without one, the test says so and fails under CI (`CI` set), where it must run.
//!
//! `TF_REVERSE_MODEL=runs/reverse TF_VIEWER_SCREENSHOT=docs/images/attention-viewer.png
//! cargo test --release --workspace --test browser` draws the README's picture from the trained
//! default model.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use regex::Regex;
use tf_inspect::attention_maps::AttentionMaps;
use tf_inspect::attribution::{AttributionMethod, attribute};
use tf_inspect::viewer::{ViewerAttribution, ViewerData, ViewerInfo, model_summary};
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, Task, TaskKind};

/// The browser to drive, if there is one.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TF_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
}

/// Runs headless Chromium on `url` with `extra` flags; returns stdout and stderr.
fn run_chromium(browser: &Path, url: &str, extra: &[&str]) -> (String, String) {
    let profile = std::env::temp_dir().join(format!(
        "tf-viewer-chromium-{}-{}",
        std::process::id(),
        extra.len()
    ));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Chromium starts");
    // Read both pipes while waiting, so that a large DOM cannot fill a pipe and stall it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("Chromium did not finish within 90 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&profile);
    (
        stdout.join().expect("stdout read"),
        stderr.join().expect("stderr read"),
    )
}

/// The page of the trained model in `TF_REVERSE_MODEL`, or of an untrained tiny one.
fn page(dir: &Path) -> (PathBuf, ViewerData) {
    let device = Device::flex();
    let input = "3 1 4 1 5 9 2 6";
    let (model, task, title, summary) = match std::env::var_os("TF_REVERSE_MODEL") {
        Some(path) => {
            let (config, model) = ModelDir::new(&path)
                .load_model(&device, Dropout::AsConfigured)
                .unwrap();
            // The directory's last two components, as a user would name it (runs/reverse).
            let path = PathBuf::from(path);
            let components: Vec<_> = path.components().rev().take(2).collect();
            let name: PathBuf = components.into_iter().rev().collect();
            let title = format!("Attention of {}", name.display());
            let task = config.task.synthetic().unwrap().clone();
            (model, task, title, model_summary(&config))
        }
        None => {
            let task = Task::new(TaskKind::Reverse, 10, 1, 12).unwrap();
            device.seed(5);
            let summary = format!("`{}` task, untrained tiny model", task.kind);
            (
                task.tiny_model().init(&device),
                task,
                "untrained".into(),
                summary,
            )
        }
    };
    let source = task.parse(input).unwrap();
    let label = |id| task.token_label(id);
    let maps = AttentionMaps::capture(
        &model,
        &source,
        13,
        tf_inspect::tokens::Tokens::ours(&label),
        &device,
    )
    .unwrap();
    let info = ViewerInfo {
        title,
        model: summary,
        translation: false,
        source_text: input.into(),
        output_text: task.format(&maps.output_ids),
    };
    let attributions = [AttributionMethod::AltiPlus, AttributionMethod::Norm]
        .into_iter()
        .map(|method| {
            let label = |id| task.token_label(id);
            let a = attribute(
                &model,
                &source,
                Some(&maps.output_ids),
                13,
                method,
                tf_inspect::tokens::Tokens::ours(&label),
                &device,
            );
            ViewerAttribution::new(method, &a.unwrap())
        })
        .collect();
    let data = ViewerData::new(&maps, info).with_attributions(attributions);
    let path = dir.join("viewer.html");
    data.write(&path).unwrap();
    (path, data)
}

/// The texts of the elements of `class` in `dom`, in order.
fn texts(dom: &str, class: &str) -> Vec<String> {
    let pattern = format!(r#"<text class="{class}"[^>]*>([^<]*)</text>"#);
    Regex::new(&pattern)
        .unwrap()
        .captures_iter(dom)
        .map(|c| c[1].replace("&lt;", "<").replace("&gt;", ">"))
        .collect()
}

/// Every drawn link as (head, query, key, opacity).
fn links(dom: &str) -> Vec<(String, String, String, String)> {
    let line = Regex::new(r#"<line class="link"[^>]*>"#).unwrap();
    let attribute = |tag: &str, name: &str| {
        Regex::new(&format!(r#" {name}="([^"]*)""#))
            .unwrap()
            .captures(tag)
            .map(|c| c[1].to_string())
            .unwrap_or_default()
    };
    line.find_iter(dom)
        .map(|m| {
            let tag = m.as_str();
            (
                attribute(tag, "data-head"),
                attribute(tag, "data-query"),
                attribute(tag, "data-key"),
                attribute(tag, "stroke-opacity"),
            )
        })
        .collect()
}

#[test]
fn the_viewer_draws_the_embedded_weights_in_chromium() {
    let Some(browser) = chromium() else {
        let message = "no Chromium found (install Debian's `chromium`, as .ci/run does, or set \
                       TF_CHROMIUM): the viewer was not tested in a browser";
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("skipped: {message}");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("viewer");
    std::fs::create_dir_all(&dir).unwrap();
    let (path, data) = page(&dir);
    let url = |hash: &str| format!("file://{}#{hash}", path.display());
    let dump = |hash: &str| {
        let (dom, log) = run_chromium(&browser, &url(hash), &["--dump-dom"]);
        assert!(
            dom.contains(r#"data-ready="true""#),
            "the script did not finish: {log}"
        );
        assert!(
            !dom.contains("data-errors"),
            "the page reported errors: {dom}"
        );
        // The page writes nothing to the console: any message from it is a fault.
        for line in log.lines() {
            assert!(
                !(line.contains("CONSOLE") && line.contains("source: file://")),
                "the page wrote to the console: {line}"
            );
        }
        dom
    };

    // Cross-attention, layer 1, head 0 alone: every token label, one link per pair above the
    // threshold.
    let dom = dump("kind=cross&layer=1&heads=0");
    assert_eq!(texts(&dom, "token query"), data.decoder_input);
    assert_eq!(texts(&dom, "token key"), data.source);
    let drawn = links(&dom);
    let expected = data.links("cross", 1, 0).unwrap();
    assert_eq!(drawn.len(), expected, "links of cross layer 1 head 0");
    assert!(drawn.iter().all(|(head, ..)| head == "0"));

    // Another layer draws something else.
    let other = links(&dump("kind=cross&layer=0&heads=0"));
    assert_eq!(other.len(), data.links("cross", 0, 0).unwrap());
    assert_ne!(other, drawn, "layer 0 and layer 1 look the same");

    // All heads of encoder self-attention; the model view has a thumbnail per layer and head.
    let heads = data.blocks[0].weights.len();
    let all = links(&dump("kind=encoder-self&layer=0"));
    let expected: usize = (0..heads)
        .map(|h| data.links("encoder-self", 0, h).unwrap())
        .sum();
    assert_eq!(all.len(), expected);
    let model_view = dump("kind=decoder-self&view=model");
    let thumbs = Regex::new(r#"<g class="thumb[^"]*" data-layer="\d+" data-head="\d+""#)
        .unwrap()
        .find_iter(&model_view)
        .count();
    let decoder_layers = data
        .blocks
        .iter()
        .filter(|b| b.kind == "decoder-self")
        .count();
    assert_eq!(
        thumbs,
        decoder_layers * heads,
        "a thumbnail per decoder layer and head"
    );

    // The attributions: the first method unless the address names one; a cell per output token
    // and source or prefix position, the row labels the decoding's, the source share with ALTI+.
    let cells = |dom: &str| {
        Regex::new(r#"<rect class="cell""#)
            .unwrap()
            .find_iter(dom)
            .count()
    };
    for (hash, shown) in [
        ("kind=cross", &data.attributions[0]),
        ("method=norm", &data.attributions[1]),
    ] {
        let dom = dump(hash);
        assert!(
            dom.contains(&format!(r#"data-method="{}""#, shown.method)),
            "{hash}"
        );
        let columns = shown.source_tokens.len() + shown.prefix_tokens.len();
        assert_eq!(cells(&dom), shown.rows.len() * columns, "{hash}");
        assert_eq!(texts(&dom, "row"), shown.rows, "{hash}");
        assert_eq!(
            texts(&dom, "share").len(),
            if shown.shares { shown.rows.len() } else { 0 }
        );
    }

    // A screenshot of the head view of every cross-attention head.
    let screenshot = std::env::var_os("TF_VIEWER_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("attention-viewer.png"));
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(
        &browser,
        &url("kind=cross&layer=1&head=0"),
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1400,900",
            "--hide-scrollbars",
        ],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&screenshot).expect("a screenshot"),
    ));
    let info = decoder.read_info().expect("a PNG").info().clone();
    assert_eq!((info.width, info.height), (1400, 900));
    println!("screenshot: {}", screenshot.display());
}
