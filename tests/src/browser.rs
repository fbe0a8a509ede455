//! A real browser for the console's tests: Debian's chromium, headless,
//! driven over WebDriver (fantoccini) through its chromedriver, both started
//! per test on a free loopback port with an empty profile, and ended with the
//! test (no process left behind).
//!
//! The helpers look for things the way a person does: a field by its label,
//! a button by its text, a page by what it says. Waits poll with a timeout;
//! nothing sleeps a fixed time. `screenshot` saves the whole page as a PNG
//! under `$CARGO_TARGET_DIR/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{TempDir, free_port};

/// Debian's packages (`.ci/run` installs them); `IDM_CHROMIUM` and
/// `IDM_CHROMEDRIVER` point elsewhere.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a wait lasts unless told otherwise.
pub const WAIT: Duration = Duration::from_secs(15);

/// The desktop window; `phone()` narrows it to 390 px.
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// A headless chromium and its chromedriver; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// The profile (`--user-data-dir`) and chromedriver's log.
    dir: TempDir,
    width: u32,
    height: u32,
}

fn program(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is missing: the console's browser tests need Debian's chromium and chromium-driver \
         (run .ci/run, or apt-get install chromium chromium-driver; {env} overrides the path)",
        path.display()
    );
    path
}

/// Where screenshots go: `$CARGO_TARGET_DIR/console-screenshots/`, else the
/// workspace's `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("console-screenshots")
}

/// An XPath string literal for `text` (XPath 1.0 has no escapes).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session with
    /// a fresh profile. Self-signed certificates (the gateway's) are accepted.
    pub async fn start() -> Self {
        let chromium = program("IDM_CHROMIUM", CHROMIUM);
        let chromedriver = program("IDM_CHROMEDRIVER", CHROMEDRIVER);
        let dir = TempDir::new("browser");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = dir.path().join("chromedriver.log");

        let port = free_port();
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            // Debian's launcher turns on crash reports under
            // ~/.config/chromium: keep those in the scratch directory too.
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that drop ends chromium (a child of
        // chromedriver) with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap_or_else(|e| {
            panic!(
                "{} did not start ({e}): run .ci/run",
                chromedriver.display()
            )
        });
        let mut browser_driver = DriverGuard(Some(driver));

        // Until chromedriver answers /status ready.
        let url = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = browser_driver.0.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "chromedriver exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let ready = match probe.get(format!("{url}/status")).send().await {
                Ok(reply) => reply
                    .json::<Value>()
                    .await
                    .is_ok_and(|status| status["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {url}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-breakpad",
            "--disable-crash-reporter",
            "--hide-scrollbars",
            "--ignore-certificate-errors",
            "--disable-dev-shm-usage",
            "--lang=en-US",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
        ])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "timeouts": { "pageLoad": 30_000, "script": 10_000, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no chromium session ({e}); is {} a working chromium (run .ci/run)?\n{}",
                    chromium.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let browser = Browser {
            client,
            driver: browser_driver.0.take().unwrap(),
            dir,
            width: DESKTOP.0,
            height: DESKTOP.1,
        };
        browser.resize(DESKTOP.0, DESKTOP.1).await;
        browser
    }

    /// Ends the session (chromium quits), then chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill();
    }

    fn kill(&mut self) {
        // The whole group: chromedriver and every chromium process it started.
        kill_group(&self.driver);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    /// The scratch directory: chromium's profile (`profile/`, its
    /// `--user-data-dir`), its crash reports and chromedriver's log. Every
    /// process of this browser names it on its command line.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// chromedriver's log, for failure messages.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    pub async fn back(&self) {
        self.client.back().await.unwrap();
    }

    pub async fn refresh(&self) {
        self.client.refresh().await.unwrap();
    }

    /// The page's visible text (`innerText` of the body).
    pub async fn text(&self) -> String {
        match self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
        {
            Ok(Value::String(text)) => text,
            Ok(_) => String::new(),
            // A navigation under way: nothing to read yet.
            Err(_) => String::new(),
        }
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the
    /// page and returns what it returns.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.client.source().await.unwrap_or_default()
    }

    pub async fn title(&self) -> String {
        self.client.title().await.unwrap_or_default()
    }

    /// The visible text of every element matching `css`, whitespace
    /// collapsed (table rows: cells separated by one space).
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let found = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0])) \
                 .map(e => e.innerText.replace(/\\s+/g, ' ').trim());",
                vec![json!(css)],
            )
            .await;
        match found {
            Ok(Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The text of the page's first `h1` (in `main`).
    pub async fn heading(&self) -> String {
        self.texts("main h1")
            .await
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// Waits until the page's `h1` is `text`.
    pub async fn wait_for_heading(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let heading = self.heading().await;
            if heading == text {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {WAIT:?} for the heading {text:?}; at {} it is {heading:?}:\n{}",
                    self.url().await,
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page shows `text`, and returns the page's text.
    pub async fn wait_for_text(&self, text: &str) -> String {
        self.wait_for_text_within(text, WAIT).await
    }

    pub async fn wait_for_text_within(&self, text: &str, timeout: Duration) -> String {
        self.wait_until(&format!("the page to show {text:?}"), timeout, |page| {
            page.contains(text)
        })
        .await
    }

    /// Waits until the page no longer shows `text`.
    pub async fn wait_for_no_text(&self, text: &str) -> String {
        self.wait_until(
            &format!("the page to stop showing {text:?}"),
            WAIT,
            |page| !page.contains(text),
        )
        .await
    }

    /// Waits until `ready(page text)`; panics with the page and URL after
    /// `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let page = self.text().await;
            if ready(&page) {
                return page;
            }
            if Instant::now() >= deadline {
                let url = self.url().await;
                panic!("waited {timeout:?} for {what} at {url}; the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the URL contains `part` (a navigation or an htmx push).
    pub async fn wait_for_url(&self, part: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {WAIT:?} for a URL with {part:?}; at {url}:\n{}",
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element (CSS selector).
    pub async fn wait_for(&self, css: &str) -> Element {
        self.find_within(Locator::Css(css), WAIT, css).await
    }

    async fn find_within(&self, locator: Locator<'_>, timeout: Duration, what: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(100))
            .for_element(locator)
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no {what} at {} after {timeout:?} ({e}); the page says:\n{}",
                self.url().await,
                self.text().await
            ),
        }
    }

    /// The form field labelled `label` (a `<label>` whose text is or begins
    /// with it, by `for` or by nesting), else the field named `label`.
    pub async fn field(&self, label: &str) -> Element {
        let lit = xpath_literal(label);
        let labelled =
            format!("//label[normalize-space(.)={lit} or starts-with(normalize-space(.), {lit})]");
        let xpath = format!(
            "(//*[(self::input or self::select or self::textarea) and \
               (@id = {labelled}/@for or ancestor::label[normalize-space(.)={lit} or \
               starts-with(normalize-space(.), {lit})] or @name={lit})])[1]"
        );
        self.find_within(
            Locator::XPath(&xpath),
            WAIT,
            &format!("field labelled or named {label:?}"),
        )
        .await
    }

    /// Replaces the value of the field labelled (or named) `label`.
    pub async fn fill(&self, label: &str, value: &str) {
        let field = self.field(label).await;
        field.clear().await.unwrap();
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("typing into {label:?}: {e}"));
    }

    /// The current value of the field labelled (or named) `label`.
    pub async fn value(&self, label: &str) -> String {
        self.field(label)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// Picks `option` (its visible text) in the select labelled `label`.
    pub async fn select(&self, label: &str, option: &str) {
        self.field(label)
            .await
            .select_by_label(option)
            .await
            .unwrap_or_else(|e| panic!("choosing {option:?} in {label:?}: {e}"));
    }

    /// Clicks the button (`<button>`, or an `<input>` submit/button) whose
    /// text is `text`.
    pub async fn click(&self, text: &str) {
        let lit = xpath_literal(text);
        let xpath = format!(
            "(//button[normalize-space(.)={lit}] | \
              //input[(@type='submit' or @type='button') and @value={lit}])[1]"
        );
        let button = self
            .find_within(Locator::XPath(&xpath), WAIT, &format!("button {text:?}"))
            .await;
        self.click_element(&button, text).await;
    }

    /// Follows the link whose text is `text` (the first one).
    pub async fn follow(&self, text: &str) {
        let lit = xpath_literal(text);
        let xpath = format!("(//a[normalize-space(.)={lit}])[1]");
        let link = self
            .find_within(Locator::XPath(&xpath), WAIT, &format!("link {text:?}"))
            .await;
        self.click_element(&link, text).await;
    }

    /// Clicks the first element matching `xpath`.
    pub async fn click_xpath(&self, xpath: &str) {
        let element = self.find_within(Locator::XPath(xpath), WAIT, xpath).await;
        self.click_element(&element, xpath).await;
    }

    /// Presses Enter in the field labelled (or named) `label` (submits its
    /// form as a person would).
    pub async fn enter(&self, label: &str) {
        self.field(label)
            .await
            .send_keys("\u{E007}")
            .await
            .unwrap_or_else(|e| panic!("Enter in {label:?}: {e}"));
    }

    /// Follows the link whose text is `text` inside `css`.
    pub async fn follow_in(&self, css: &str, text: &str) {
        let container = self.wait_for(css).await;
        let lit = xpath_literal(text);
        let xpath = format!(".//a[normalize-space(.)={lit}]");
        let link = container
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no link {text:?} in {css}: {e}"));
        self.click_element(&link, text).await;
    }

    async fn click_element(&self, element: &Element, what: &str) {
        // Into view first: on a phone-wide window it may be below the fold.
        let _ = self
            .client
            .execute(
                "arguments[0].scrollIntoView({block: 'center'});",
                vec![serde_json::to_value(element).unwrap()],
            )
            .await;
        let result: Result<(), CmdError> = element.click().await;
        result.unwrap_or_else(|e| panic!("clicking {what:?}: {e}"));
    }

    /// Sets the window to `width` × `height` CSS pixels of viewport.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("window size {width}x{height}: {e}"));
    }

    /// A phone-wide window (390 px).
    pub async fn phone(&mut self) {
        (self.width, self.height) = PHONE;
        self.resize(PHONE.0, PHONE.1).await;
    }

    /// Back to the 1280 px desktop window.
    pub async fn desktop(&mut self) {
        (self.width, self.height) = DESKTOP;
        self.resize(DESKTOP.0, DESKTOP.1).await;
    }

    /// Saves the whole page (not only the window) as
    /// `console-screenshots/<name>.png`, and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        // The window as tall as the page (at most 6000 px), then back. The
        // window's height includes what is not page (outer − inner).
        let sizes = self
            .client
            .execute(
                "return [Math.max(document.documentElement.scrollHeight, \
                 document.body ? document.body.scrollHeight : 0), \
                 window.outerHeight - window.innerHeight];",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| serde_json::from_value::<(u32, u32)>(v).ok());
        let tall = match sizes {
            Some((page, frame)) => (page + frame).clamp(self.height, 6000),
            None => self.height,
        };
        if tall != self.height {
            self.resize(self.width, tall).await;
        }
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        if tall != self.height {
            self.resize(self.width, self.height).await;
        }
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// SIGKILL to the process group `child` leads (it was started with
/// `process_group(0)`): chromedriver and the chromium processes under it.
/// procps' kill(1), as the workspace forbids `unsafe` (no libc::kill).
fn kill_group(child: &Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills a chromedriver that never became a `Browser` (a panic during start).
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            kill_group(child);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::xpath_literal;

    #[test]
    fn xpath_literals_quote_any_text() {
        assert_eq!(xpath_literal("Save"), "'Save'");
        assert_eq!(xpath_literal("Jon's"), "\"Jon's\"");
        assert_eq!(xpath_literal(r#"a'b"c"#), r#"concat('a', "'", 'b"c')"#);
    }
}
