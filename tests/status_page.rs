//! The status page at the admin endpoint's `/`: every server with its state and reason, values
//! from outside escaped, and (ignored, run by CI) the page as headless Chromium renders it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::scrape::{server, status};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A cluster name no node should have: what a node says goes into a reason verbatim.
const HOSTILE: &str = "<script>alert(\"owned\")</script>&'";

/// `HOSTILE` as the page must write it.
const HOSTILE_ESCAPED: &str = "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;&amp;&#39;";

/// A raw request; returns the response head and body.
async fn raw(admin: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(admin).await.expect("connect admin");
    s.write_all(request.as_bytes()).await.expect("send request");
    let mut out = Vec::new();
    tokio::time::timeout(SOON, s.read_to_end(&mut out))
        .await
        .expect("the admin endpoint answers and closes")
        .expect("read answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

async fn page(admin: SocketAddr) -> (String, String) {
    raw(
        admin,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// roundhouse in front of es-1..es-3, checked for cluster `prod`, all three up.
async fn three_up() -> (Vec<FakeNode>, Roundhouse) {
    let nodes = three_nodes().await;
    let mut rh = serve(es_backend(&nodes).check("cluster_name", "prod")).await;
    rh.notify
        .wait_for_status(&["serving 1 listener; es: 3/3 servers up"], SOON)
        .await;
    (nodes, rh)
}

#[tokio::test]
async fn status_page_names_every_server_and_escapes_a_nodes_answer() {
    let (nodes, mut rh) = three_up().await;
    let admin = rh.admin().await;
    let _ = names(rh.listener("es").await, 3).await;
    nodes[1].set(|b| b.cluster_name = HOSTILE.to_owned());
    rh.notify.wait_status(&["DEGRADED"], SOON).await;

    let (head, body) = page(admin).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    for name in ["es-1", "es-2", "es-3"] {
        assert!(body.contains(&format!(">{name}<")), "{name} in {body}");
    }
    let reason = format!("cluster_name is {HOSTILE_ESCAPED}, want prod");
    assert!(
        body.contains(&format!("class=\"reason\">{reason}</td>")),
        "es-2's reason in its row: {body}"
    );
    assert!(
        body.contains("DEGRADED: es: 2/3 servers up (es-2: "),
        "the STATUS line at the top: {body}"
    );
    assert!(
        !body.contains("<script"),
        "nothing from a node is markup: {body}"
    );
    assert!(
        body.contains("<meta http-equiv=\"refresh\"") && body.contains("name=\"viewport\""),
        "{body}"
    );
}

#[tokio::test]
async fn status_page_says_in_words_why_a_server_is_out() {
    let (nodes, mut rh) = three_up().await;
    let admin = rh.admin().await;
    let (code, answer) = http_post(admin, "/servers/es/es-1/drain", None)
        .await
        .expect("drain es-1");
    assert_eq!(code, 200, "{answer}");
    let mut nodes = nodes;
    nodes.remove(2).stop().await;
    rh.notify.wait_status(&["DEGRADED", "es-3: "], SOON).await;
    let st = status(admin).await;
    let es3 = server(&st, "es", "es-3")["reason"]
        .as_str()
        .expect("es-3 has a reason")
        .to_owned();

    let (_, body) = page(admin).await;
    assert!(
        body.contains("<span class=\"state drain\">drain</span>")
            && body.contains("class=\"reason\">draining</td>"),
        "{body}"
    );
    assert!(
        body.contains("<span class=\"state down\">down</span>")
            && body.contains(&format!("class=\"reason\">{es3}</td>")),
        "es-3's reason ({es3}) in its row: {body}"
    );
    let (head, _) = raw(
        admin,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
}

/// Headless Chromium: `ROUNDHOUSE_TEST_CHROMIUM`, else `chromium` (Debian's package).
fn chromium() -> String {
    std::env::var("ROUNDHOUSE_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

/// Runs headless Chromium on `url` with `args`; returns its standard output.
async fn browse(profile: &Path, url: &str, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .env("HOME", profile)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    // Chromium's sandbox refuses to run as root
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"))
        == 0
    {
        cmd.arg("--no-sandbox");
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finishes within 60s")
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): apt-get install chromium, or set ROUNDHOUSE_TEST_CHROMIUM",
                chromium()
            )
        });
    assert!(
        out.status.success(),
        "chromium {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Width and height of a PNG, from its IHDR chunk; fails for anything that is not a PNG.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "a PNG ({} bytes)",
        png.len()
    );
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    (be(&png[16..20]), be(&png[20..24]))
}

/// Takes a screenshot of `url` at `width`x`height` and checks it is an image of the page.
async fn screenshot(profile: &Path, url: &str, width: u32, height: u32) -> Vec<u8> {
    let file = profile.join(format!("page-{width}x{height}.png"));
    browse(
        profile,
        url,
        &[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={width},{height}"),
        ],
    )
    .await;
    let png = std::fs::read(&file).expect("chromium wrote the screenshot");
    assert_eq!(png_size(&png), (width, height), "{}", file.display());
    // a blank page compresses to a few hundred bytes; text and coloured badges do not
    assert!(
        png.len() > 10_000,
        "{} is only {} bytes",
        file.display(),
        png.len()
    );
    if let Ok(dir) = std::env::var("ROUNDHOUSE_TEST_SCREENSHOTS") {
        let _ = std::fs::copy(
            &file,
            Path::new(&dir).join(file.file_name().expect("a name")),
        );
    }
    png
}

#[tokio::test]
#[ignore = "needs Debian's chromium (apt-get install chromium); run by .ci/run"]
async fn chromium_renders_the_status_page_with_the_down_nodes_reason() {
    let (mut nodes, mut rh) = three_up().await;
    let admin = rh.admin().await;
    let _ = names(rh.listener("es").await, 6).await;
    nodes.remove(1).stop().await;
    rh.notify.wait_status(&["DEGRADED", "es-2: "], SOON).await;
    let st = status(admin).await;
    let reason = server(&st, "es", "es-2")["reason"]
        .as_str()
        .expect("es-2 has a reason")
        .to_owned();
    let url = format!("http://{admin}/");
    let profile = tempfile::tempdir().expect("temp dir");

    let dom = browse(profile.path(), &url, &["--dump-dom"]).await;
    assert!(dom.contains("<title>roundhouse: DEGRADED</title>"), "{dom}");
    assert!(
        dom.contains(&format!("class=\"reason\">{reason}</td>")),
        "es-2's reason ({reason}) as Chromium rendered the page: {dom}"
    );
    for name in ["es-1", "es-2", "es-3"] {
        assert!(dom.contains(&format!(">{name}<")), "{name} in {dom}");
    }
    screenshot(profile.path(), &url, 1280, 900).await;
    let narrow = browse(
        profile.path(),
        &url,
        &["--dump-dom", "--window-size=390,844"],
    )
    .await;
    assert!(
        narrow.contains(&format!("class=\"reason\">{reason}</td>")),
        "{narrow}"
    );
    screenshot(profile.path(), &url, 390, 844).await;
}
