//! A real browser for the page at `/`: headless Chromium driven through chromedriver's W3C
//! WebDriver API (plain JSON over HTTP). Both come from Debian (`chromium`, `chromium-driver`;
//! scripts/test installs them). Killed on `Drop`.

use std::{
    process::{Child, Command},
    time::Duration,
};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::program_on_a_free_port;

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: TempDir,
}

impl Browser {
    pub(crate) async fn start() -> Self {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromium is installed (scripts/test installs the Debian package)");
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("chromedriver.log");
        let chromedriver = |port: u16| {
            let mut command = Command::new("chromedriver");
            command.arg(format!("--port={port}"));
            command
        };
        let (driver, port) = program_on_a_free_port("chromedriver", &log, chromedriver, "/status").await;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let mut browser = Self { driver, base, session: String::new(), http, _profile: profile };
        let created = browser.call(reqwest::Method::POST, "/session", capabilities).await;
        browser.session = created["sessionId"].as_str().expect("a session").to_string();
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response =
            self.http.request(method, format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {value}");
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub(crate) async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, &self.session_path("/url"), json!({"url": url})).await;
    }

    /// Sets the window's size; a headless window has no frame, so this is the viewport's too.
    pub(crate) async fn resize(&self, width: u32, height: u32) {
        let body = json!({"width": width, "height": height});
        self.call(reqwest::Method::POST, &self.session_path("/window/rect"), body).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub(crate) async fn run(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.call(reqwest::Method::POST, &self.session_path("/execute/sync"), body).await
    }

    /// Types `text` into the element `css` selects.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        let path = self.session_path(&format!("/element/{element}/value"));
        self.call(reqwest::Method::POST, &path, json!({"text": text})).await;
    }

    pub(crate) async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.call(reqwest::Method::POST, &self.session_path(&format!("/element/{element}/click")), json!({}))
            .await;
    }

    async fn element(&self, css: &str) -> String {
        let body = json!({"using": "css selector", "value": css});
        let found = self.call(reqwest::Method::POST, &self.session_path("/element"), body).await;
        found[ELEMENT].as_str().expect("an element").to_string()
    }
}

impl Drop for Browser {
    /// Ends the WebDriver session first, which quits Chromium (killing chromedriver alone would
    /// leave the browser running), then the driver. Plain blocking HTTP: this runs on panics too.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
