//! Short runs of the cluster benchmark on the real binary: each workload,
//! read path and the open loop produce what they claim (reads and writes in
//! the JSON, no errors), a sweep prints one line per point, and the HTML
//! report renders its plots in a real browser (headless Chromium; skipped
//! with the reason when no Chromium is installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs coraft-bench with `args` (a short run) and returns its JSON lines.
fn run_json(args: &[&str]) -> Vec<Value> {
    // Short-run defaults, unless the test sets the option itself.
    let defaults = [["--duration", "1"], ["--warmup", "0"], ["--clients", "4"]];
    let mut command = Command::new(env!("CARGO_BIN_EXE_coraft-bench"));
    for [option, value] in defaults {
        if !args.contains(&option) {
            command.args([option, value]);
        }
    }
    let output = command
        .args(["--no-floor", "--json"])
        .args(args)
        .output()
        .expect("coraft-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn number(line: &Value, key: &str) -> f64 {
    line[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {line}"))
}

#[test]
fn a_mixed_run_reads_and_writes_and_records_machine_and_configuration() {
    let lines = run_json(&["--workload", "mixed", "--read-ratio", "0.5", "--keys", "100"]);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["workload"], "mixed");
    assert!(number(line, "reads") > 0.0 && number(line, "writes") > 0.0, "{line}");
    assert_eq!(number(line, "errors"), 0.0, "{line}");
    assert_eq!(line["config"]["state_machine"], "kv");
    assert_eq!(line["config"]["keys"], 100);
    assert_eq!(line["config"]["read_ratio"], 0.5);
    // The same clients writing only, measured in the same run.
    assert!(number(line, "write_only_ops_per_s") > 0.0, "{line}");
    let ratio = number(line, "ops_per_s") / number(line, "write_only_ops_per_s");
    assert!((number(line, "ops_over_write_only") - ratio).abs() < 0.01, "{line}");
    assert!(number(&line["machine"], "cores") >= 1.0);
    assert!(line["machine"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(
        line["machine"]["wal_fs"].as_str().is_some_and(|fs| fs != "unknown"),
        "{line}"
    );
    assert!(
        line["command"].as_str().is_some_and(|c| c.contains("--read-ratio 0.5")),
        "{line}"
    );
}

#[test]
fn reads_run_on_every_read_path() {
    for mode in ["read-index", "lease", "follower", "stale"] {
        let lines = run_json(&["--workload", "read", "--read-mode", mode]);
        let line = &lines[0];
        assert!(number(line, "reads") > 0.0, "{mode}: {line}");
        assert_eq!(number(line, "writes"), 0.0, "{mode}: {line}");
        assert_eq!(number(line, "errors"), 0.0, "{mode}: {line}");
        assert_eq!(line["config"]["read_mode"], mode);
    }
}

#[test]
fn the_open_loop_offers_its_rate_and_no_more() {
    // 300 requests/s for 1 s, after a warm-up that covers connecting:
    // every request due in the measured second is answered, failed or
    // reported unsent, and no more are sent.
    let lines = run_json(&["--rate", "300", "--warmup", "1"]);
    let line = &lines[0];
    let offered = number(line, "ops") + number(line, "unsent") + number(line, "errors");
    assert!(
        (290.0..=305.0).contains(&offered),
        "offered 300 in 1 s, accounted for {offered}: {line}"
    );
    assert_eq!(line["config"]["rate"], 300);
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
}

/// The page's DOM after Chromium loaded and laid it out.
fn dump_dom(browser: &Path, page: &Path, profile: &Path) -> String {
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=2000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("waiting for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("chromium's output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_sweep_prints_a_line_per_point_and_its_report_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let report_arg = report.to_str().unwrap().to_string();
    let lines = run_json(&["--sweep", "clients=1,4", "--report", &report_arg]);
    assert_eq!(lines.len(), 2, "one JSON line per point");
    assert_eq!(lines[0]["clients"], 1);
    assert_eq!(lines[1]["clients"], 4);
    let page = std::fs::read_to_string(&report).expect("the report was written");
    assert!(
        !page.contains("<script") && !page.contains("http://") || page.contains("xmlns=\"http://www.w3.org/2000/svg\"")
    );
    assert!(!page.contains("https://"), "the report must not load anything");
    assert_eq!(
        page.matches("class=\"series\"").count(),
        4,
        "two plots, one line per point each"
    );
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED the browser check: no chromium on PATH (apt-get install chromium)");
        return;
    };
    // A copy of the page with a check that reads the laid-out geometry of
    // every plotted line back from the browser.
    let checked = dir.path().join("checked.html");
    let script = "<script>const lines=[...document.querySelectorAll('svg polyline.series')];\
        const boxes=lines.map(l=>{const b=l.getBBox();return Math.round(b.width)+'x'+Math.round(b.height)+':'+l.points.numberOfItems});\
        const svgs=[...document.querySelectorAll('svg')].map(s=>s.id+'='+Math.round(s.getBoundingClientRect().width));\
        const p=document.createElement('pre');p.id='render-check';p.textContent=svgs.join(',')+' | '+boxes.join(',');\
        document.body.appendChild(p);</script>";
    std::fs::write(&checked, page.replace("</body>", &format!("{script}</body>"))).unwrap();
    let dom = dump_dom(&browser, &checked, &dir.path().join("profile"));
    let check = dom
        .split("<pre id=\"render-check\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("the browser did not lay the page out: {dom:.500}"));
    let (svgs, boxes) = check.split_once(" | ").expect("two parts");
    for (svg, name) in svgs.split(',').zip(["throughput", "percentiles"]) {
        let (id, width) = svg.split_once('=').unwrap();
        assert_eq!(id, name, "{check}");
        assert!(
            width.parse::<f64>().unwrap() >= 720.0,
            "the {name} plot is not laid out full size: {check}"
        );
    }
    let boxes: Vec<&str> = boxes.split(',').collect();
    assert_eq!(boxes.len(), 4, "{check}");
    for laid_out in boxes {
        let (size, points) = laid_out.split_once(':').unwrap();
        let width: f64 = size.split('x').next().unwrap().parse().unwrap();
        let points: usize = points.parse().unwrap();
        assert!(
            width > 100.0 && points >= 2,
            "a plotted line did not render across its plot: {check}"
        );
    }
}
