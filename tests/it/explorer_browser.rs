//! The explorer page in a real browser: Debian's headless Chromium, driven over the
//! DevTools protocol by the `headless_chrome` crate (synchronous, so the test reads as a
//! script, and it launches a given Chromium binary without downloading one; chromiumoxide
//! would need an async runtime in the test for no gain here).
//!
//! Against `arlm serve` on an ephemeral port holding a tiny GPT, a Kneser-Ney trigram,
//! the exact synthetic source and a tiny LSTM: the rendered token count and total log-prob equal
//! `arlm score`'s to the digits shown, a hover shows the alternatives, a What-if branch
//! rescores, a seeded generation streams `arlm generate`'s text, models switch, Compare
//! and Exposure render, a ~1,000-token text scores and renders in under a second (the
//! time is printed), streaming causes no layout shift, and screenshots at phone and
//! desktop widths land in `target/tmp/explorer-screenshots/`. Any console error, page
//! error or error shown on the page fails the test.
//!
//! Without a `chromium` binary (`$ARLM_CHROMIUM`, or `chromium` / `chromium-browser` on
//! PATH) the test prints SKIPPED and passes; `.ci/run` installs Debian's package.

use super::explorer::{cli_generate, cli_score, fixture, s, Server};
use headless_chrome::browser::tab::Tab;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Emulation, Page};
use headless_chrome::{Browser, LaunchOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ARLM_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Evaluates `js` in the page and returns its JSON value.
fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    let r = tab
        .evaluate(js, false)
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"));
    r.value.unwrap_or(serde_json::Value::Null)
}

/// Polls `js` until it is true (at most `secs` seconds).
fn wait_for(tab: &Tab, what: &str, js: &str, secs: u64) {
    let t = Instant::now();
    loop {
        if eval(tab, js) == serde_json::Value::Bool(true) {
            return;
        }
        let shown = eval(tab, "document.getElementById('error').textContent");
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what} (page error: {shown})"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn text_of(tab: &Tab, selector: &str) -> String {
    let js = format!("document.querySelector({selector:?}).textContent");
    eval(tab, &js).as_str().unwrap_or_default().to_string()
}

/// Sets a form control's value and fires the events a user's edit fires.
fn set_value(tab: &Tab, id: &str, value: &str) {
    let js = format!(
        "(() => {{ const e = document.getElementById({id:?}); e.value = {value:?}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); \
         e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
    );
    eval(tab, &js);
}

/// Scores `text` in the Score panel by typing it, and waits for the render.
fn type_and_score(tab: &Tab, text: &str) {
    let seq = eval(tab, "+(document.getElementById('chips').dataset.seq || 0)");
    eval(tab, "document.getElementById('text').value = ''");
    tab.find_element("#text").unwrap().click().unwrap();
    // Input.insertText: the browser's own text input (one `input` event), not a key
    // event per character, which costs a DevTools round trip each.
    tab.send_character(text).unwrap();
    tab.find_element("#score-go").unwrap().click().unwrap();
    wait_for(
        tab,
        "the score",
        &format!(
            "+(document.getElementById('chips').dataset.seq || 0) > {seq} && \
             document.getElementById('text').value === {text:?} && \
             document.body.dataset.scoreMs !== undefined"
        ),
        30,
    );
    // Let a debounced rescore from the typing land before reading the numbers.
    std::thread::sleep(Duration::from_millis(500));
}

/// Emulates a screen of `width` x `height` CSS pixels.
fn set_viewport(tab: &Tab, width: u32, height: u32, mobile: bool) {
    tab.call_method(Emulation::SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: 1.0,
        mobile,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
}

/// A PNG of the page at `width` x `height`, then back to the desktop size.
fn screenshot(tab: &Tab, width: u32, height: u32, mobile: bool, out: &std::path::Path) {
    set_viewport(tab, width, height, mobile);
    let png = tab
        .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(out, png).unwrap();
    set_viewport(tab, 1280, 900, false);
}

/// Console errors, uncaught exceptions and error log entries of the page.
fn watch_errors(tab: &Tab) -> Arc<Mutex<Vec<String>>> {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    tab.add_event_listener(Arc::new(move |event: &Event| {
        let msg = match event {
            Event::RuntimeExceptionThrown(e) => {
                Some(format!("exception: {}", e.params.exception_details.text))
            }
            Event::RuntimeConsoleAPICalled(e)
                if format!("{:?}", e.params.Type).to_lowercase() == "error" =>
            {
                Some(format!("console.error: {:?}", e.params.args))
            }
            Event::LogEntryAdded(e)
                if format!("{:?}", e.params.entry.level).to_lowercase() == "error" =>
            {
                Some(format!("log: {}", e.params.entry.text))
            }
            _ => None,
        };
        if let Some(m) = msg {
            sink.lock().unwrap().push(m);
        }
    }))
    .unwrap();
    tab.enable_runtime().unwrap();
    tab.enable_log().unwrap();
    errors
}

#[test]
fn the_explorer_works_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        eprintln!("SKIPPED: no chromium binary (install Debian's `chromium` or set ARLM_CHROMIUM)");
        return;
    };
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("explorer: {:>6.2} s {what}", t0.elapsed().as_secs_f64());
    let f = fixture();
    let srv = Server::start();
    phase("models and server ready");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explorer-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let browser = Browser::new(LaunchOptions {
        headless: true,
        sandbox: false,
        path: Some(chrome),
        window_size: Some((1280, 900)),
        idle_browser_timeout: Duration::from_secs(120),
        ..LaunchOptions::default()
    })
    .expect("launch chromium");
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(30));
    let errors = watch_errors(&tab);
    tab.navigate_to(&format!("http://{}/", srv.addr))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(
        &tab,
        "the model list",
        "document.querySelectorAll('#model option').length === 4",
        20,
    );

    phase("page loaded");
    // Score: token count and total log-prob equal `arlm score`'s to the digits shown.
    let text = "the small dog saw the old cat.";
    type_and_score(&tab, text);
    let want = cli_score(&f.gpt, text);
    assert_eq!(
        text_of(&tab, "#tot-tokens"),
        want["tokens"].as_array().unwrap().len().to_string()
    );
    let joint = want["joint_logprob"].as_f64().unwrap();
    assert_eq!(text_of(&tab, "#tot-joint"), format!("{joint:.4}"));
    let bpb = want["metrics"]["bits_per_byte"].as_f64().unwrap();
    assert_eq!(text_of(&tab, "#tot-bpb"), format!("{bpb:.4}"));
    assert_eq!(
        eval(&tab, "document.querySelectorAll('#chips .chip').length"),
        30
    );

    phase("scored");
    // GLTR's rank buckets: every chip gets the class of its rank.
    tab.find_element("input[name='colour'][value='rank']")
        .unwrap()
        .click()
        .unwrap();
    let ranks: Vec<u64> = want["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rank"].as_u64().unwrap())
        .collect();
    let classes = eval(
        &tab,
        "[...document.querySelectorAll('#chips .chip')].map((c) => c.classList[1]).join(' ')",
    );
    let bucket = |r: u64| match r {
        0..=10 => "r1",
        11..=100 => "r2",
        101..=1000 => "r3",
        _ => "r4",
    };
    let want_classes: Vec<&str> = ranks.iter().map(|&r| bucket(r)).collect();
    assert_eq!(classes, want_classes.join(" "));
    tab.find_element("input[name='colour'][value='prob']")
        .unwrap()
        .click()
        .unwrap();

    // Hover: the tooltip lists the alternatives.
    tab.find_element("#chips .chip[data-i='4']")
        .unwrap()
        .move_mouse_over()
        .unwrap();
    wait_for(
        &tab,
        "the tooltip",
        "!document.getElementById('tip').hidden",
        5,
    );
    let tip = text_of(&tab, "#tip");
    assert!(tip.contains("alternatives"), "{tip}");
    assert_eq!(eval(&tab, "document.querySelectorAll('#tip tr').length"), 5);
    // The keyboard: arrow keys move the focus along the chips, the tooltip follows.
    eval(&tab, "document.querySelector('#chips .chip').focus(); true");
    tab.press_key("ArrowRight").unwrap();
    tab.press_key("ArrowRight").unwrap();
    assert_eq!(eval(&tab, "document.activeElement.dataset.i"), "2");
    assert!(
        text_of(&tab, "#tip").contains("(id 101)"),
        "{}",
        text_of(&tab, "#tip")
    );
    tab.find_element("#chips .chip[data-i='4']")
        .unwrap()
        .move_mouse_over()
        .unwrap();
    screenshot(&tab, 1280, 900, false, &shots.join("desktop-score.png"));
    screenshot(&tab, 390, 844, true, &shots.join("phone-score.png"));

    phase("hover, keyboard, screenshots");
    // What if: branch at token 5; the page's change equals the two joints' difference.
    tab.find_element("#chips .chip[data-i='5']")
        .unwrap()
        .click()
        .unwrap();
    tab.find_element("#whatif .alts button")
        .unwrap()
        .click()
        .unwrap();
    wait_for(
        &tab,
        "the branch",
        "!!document.getElementById('branch-delta')",
        20,
    );
    let branch: f64 = text_of(&tab, "#branch-joint").parse().unwrap();
    let delta: f64 = text_of(&tab, "#branch-delta").parse().unwrap();
    assert!(
        (branch - joint - delta).abs() < 2e-4,
        "{branch} {joint} {delta}"
    );
    screenshot(&tab, 1280, 1000, false, &shots.join("desktop-whatif.png"));

    phase("what if");
    // Generate: the streamed text is `arlm generate`'s with the same seed and settings,
    // and streaming moves nothing on the page.
    tab.find_element("#tab-generate").unwrap().click().unwrap();
    set_value(&tab, "prompt", "the cat");
    set_value(&tab, "g-seed", "7");
    set_value(&tab, "g-max_tokens", "24");
    eval(
        &tab,
        "window.__shift = 0; new PerformanceObserver((l) => { for (const e of l.getEntries()) \
         if (!e.hadRecentInput) window.__shift += e.value; }).observe({type: 'layout-shift'}); true",
    );
    tab.find_element("#gen-go").unwrap().click().unwrap();
    wait_for(
        &tab,
        "the generation",
        "document.body.dataset.genState === 'done'",
        60,
    );
    let want = cli_generate(&f.gpt, &["--seed", "7", "-n", "24", "--prompt", "the cat"]);
    assert_eq!(text_of(&tab, "#gen-text"), want);
    assert_eq!(
        eval(&tab, "document.querySelectorAll('#stages .stage').length"),
        7
    );
    let shift = eval(&tab, "window.__shift").as_f64().unwrap();
    println!("explorer: layout shift while streaming: {shift:.4}");
    assert!(shift < 0.05, "layout shift {shift} while streaming");
    screenshot(&tab, 1280, 1100, false, &shots.join("desktop-generate.png"));
    set_viewport(&tab, 390, 844, true);
    eval(
        &tab,
        "document.getElementById('gen-out').scrollIntoView(); true",
    );
    screenshot(&tab, 390, 844, true, &shots.join("phone-generate.png"));
    eval(&tab, "window.scrollTo(0, 0); true");

    phase("generate");
    // Compare: the GPT and the exact source share the bytes tokenizer.
    tab.find_element("#tab-compare").unwrap().click().unwrap();
    set_value(&tab, "cmp-a", "gpt");
    set_value(&tab, "cmp-b", "synth");
    tab.find_element("#cmp-go").unwrap().click().unwrap();
    wait_for(
        &tab,
        "the comparison",
        "!!document.getElementById('cmp-table')",
        20,
    );
    assert!(
        eval(&tab, "document.querySelectorAll('#cmp-chips .chip').length")
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    screenshot(&tab, 1280, 900, false, &shots.join("desktop-compare.png"));

    phase("compare");
    // Exposure bias under the exact source.
    tab.find_element("#tab-exposure").unwrap().click().unwrap();
    set_value(&tab, "x-prompts", "8");
    tab.find_element("#x-go").unwrap().click().unwrap();
    wait_for(
        &tab,
        "the exposure chart",
        "!!document.getElementById('x-table')",
        60,
    );
    screenshot(&tab, 1280, 1000, false, &shots.join("desktop-exposure.png"));

    phase("exposure");
    // Switch models: the Kneser-Ney model rescoring the text, and no exact source.
    set_value(&tab, "model", "kn");
    wait_for(
        &tab,
        "the exposure notice",
        "!!document.getElementById('x-none')",
        10,
    );
    tab.find_element("#tab-score").unwrap().click().unwrap();
    type_and_score(&tab, text);
    let want = cli_score(&f.kn, text);
    assert_eq!(
        text_of(&tab, "#tot-tokens"),
        want["tokens"].as_array().unwrap().len().to_string()
    );
    let joint = want["joint_logprob"].as_f64().unwrap();
    assert_eq!(text_of(&tab, "#tot-joint"), format!("{joint:.4}"));

    phase("switch models");
    // A ~1,000-token text on the tiny GPT: request, scoring and render under a second.
    set_value(&tab, "model", "gpt");
    let long: String = std::fs::read_to_string(f.dir.join("synth.txt"))
        .unwrap()
        .chars()
        .take(1000)
        .collect();
    eval(
        &tab,
        &format!("document.getElementById('text').value = {long:?}"),
    );
    let seq = eval(&tab, "+document.getElementById('chips').dataset.seq");
    tab.find_element("#score-go").unwrap().click().unwrap();
    wait_for(
        &tab,
        "the long score",
        &format!(
            "+document.getElementById('chips').dataset.seq > {seq} && \
             document.querySelectorAll('#chips .chip').length === {}",
            long.len()
        ),
        30,
    );
    std::thread::sleep(Duration::from_millis(600));
    let ms: f64 = eval(&tab, "X.lastScoreMs").as_f64().unwrap();
    println!(
        "explorer: scoring and rendering {} tokens took {ms:.0} ms (the page's own clock)",
        long.len()
    );
    assert!(ms < 1000.0, "scoring {} tokens took {ms} ms", long.len());

    phase("long text");
    let shown = text_of(&tab, "#error");
    assert!(shown.is_empty(), "the page shows an error: {shown}");
    let errs = errors.lock().unwrap().clone();
    assert!(errs.is_empty(), "console or page errors: {errs:#?}");
    println!("explorer: screenshots in {}", s(&shots));
}
