//! Headless Chromium driven through chromedriver (WebDriver, with the fantoccini client), for
//! the dashboard's tests. chromedriver is started on a free loopback port in a process group
//! of its own; dropping the [`Browser`] ends the WebDriver session (Chromium quits) and kills
//! that group by its id, so no browser outlives a test, even one that panicked.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`packaging/install-deps.sh --test`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long the page may take to show what a step waits for.
pub const UI_TIMEOUT: Duration = Duration::from_secs(60);

/// The first of `names` found in PATH.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// `POST /session/{id}/se/log {"type":"browser"}`: the browser's console and network errors
/// since the last call (chromedriver's log endpoint; `goog:loggingPrefs` turns it on).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_string()),
        )
    }
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_port: u16,
    session: String,
    /// Chromium's profile, removed after the browser quit.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280x1100). Panics with what to install
    /// when either is missing.
    pub async fn start() -> Browser {
        let driver_bin = which(&["chromedriver"]).expect(
            "chromedriver is not installed: packaging/install-deps.sh --test installs chromium and chromium-driver",
        );
        let chromium = which(&["chromium", "chromium-browser"]).expect(
            "chromium is not installed: packaging/install-deps.sh --test installs chromium and chromium-driver",
        );
        let profile = tempfile::Builder::new()
            .prefix("p2pfs-test-chromium-")
            .tempdir()
            .expect("chromium profile dir");
        // A free port: bound, read, released; chromedriver binds it right after (on a clash it
        // exits and the wait below says so).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = profile.path().join("chromedriver.log");
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut browser_driver = DriverGuard(Some(driver));
        let ready = wait_driver(port, Duration::from_secs(30));
        assert!(
            ready,
            "chromedriver did not answer on 127.0.0.1:{port} within 30 s; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1100",
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                    // Nothing but the pages under test: no update checks, no safe browsing,
                    // no metrics (the test network is loopback only).
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-default-apps",
                    "--disable-domain-reliability",
                    "--disable-client-side-phishing-detection",
                    "--disable-features=Translate,OptimizationHints,MediaRouter",
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no WebDriver session: {e}; chromedriver log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        Browser {
            client,
            driver: browser_driver.0.take().unwrap(),
            driver_port: port,
            session,
            _profile: profile,
        }
    }

    /// The browser's log entries since the last call, as `LEVEL message` lines.
    pub async fn log(&self) -> Vec<String> {
        let v = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("browser log");
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The log entries since the last call that are errors (console.error, uncaught
    /// exceptions, failed requests: level SEVERE) or warnings.
    pub async fn log_problems(&self) -> Vec<String> {
        self.log()
            .await
            .into_iter()
            .filter(|l| l.starts_with("SEVERE") || l.starts_with("WARNING"))
            .collect()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` (a function body returning a value) until it returns something truthy
    /// (not null, false, 0 or ""); returns that value. Panics after `UI_TIMEOUT` with `what`,
    /// the last value, the page's error line and the browser's log.
    pub async fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let v = self.js(script, vec![]).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let err = self
                    .js(
                        "return document.getElementById('error')?.textContent",
                        vec![],
                    )
                    .await;
                panic!(
                    "{what}: not seen within {UI_TIMEOUT:?} (last {v}); error line: {err}; browser log: {:?}",
                    self.log().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(UI_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the element `css` (for a file input: the local file to upload).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.client
            .wait()
            .at_most(UI_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (Chromium quits), then stop chromedriver's group by its id.
        delete_session(self.driver_port, &self.session);
        kill_group(&mut self.driver);
    }
}

/// Kills chromedriver's group if the browser never got started.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            kill_group(c);
        }
    }
}

fn kill_group(child: &mut Child) {
    // The group chromedriver leads (process_group(0)): it and the Chromium it started.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// One plain HTTP/1.1 request to chromedriver on loopback; its status code (0: none).
fn driver_request(port: u16, method: &str, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn wait_driver(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if driver_request(port, "GET", "/status") == 200 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn delete_session(port: u16, session: &str) {
    driver_request(port, "DELETE", &format!("/session/{session}"));
}
