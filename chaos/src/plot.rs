//! A self-contained SVG of a run: acknowledged operations per second and
//! the latency of the operations completed in each second (median and
//! maximum, log scale), over time, with each fault drawn as a shaded band
//! labelled with its kind. No script, no external file: open it in a
//! browser.

use std::fmt::Write;

use crate::history::{Completion, Outcome};
use crate::nemesis::Fault;

/// Width of the drawing, in pixels.
const WIDTH: f64 = 960.0;
/// Height of each of the two panels.
const PANEL_HEIGHT: f64 = 220.0;
/// Margin around the panels (axis labels live there).
const MARGIN: f64 = 50.0;
/// The bin of the time axis.
const BIN_NS: u64 = 1_000_000_000;
/// Most bins drawn (a longer run is drawn in wider bins).
const BINS_MAX: u64 = 2_000;

fn fault_colour(name: &str) -> &'static str {
    match name {
        n if n.starts_with("kill") => "#f4a6a6",
        n if n.starts_with("stop") => "#f7d08a",
        n if n.starts_with("partition") => "#a9c8f0",
        _ => "#c9b3e6",
    }
}

/// Draws the completions and faults of a run as an SVG document.
pub fn svg(completions: &[Completion], faults: &[Fault], title: &str) -> String {
    let end_ns = completions
        .iter()
        .filter_map(|c| c.complete_ns)
        .chain(faults.iter().map(|f| f.end_ns))
        .max()
        .unwrap_or(0)
        .max(1);
    let bin_ns = BIN_NS.max(end_ns.div_ceil(BINS_MAX));
    let bins = end_ns.div_ceil(bin_ns) as usize;
    let mut ok = vec![0u64; bins];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); bins];
    for completion in completions {
        let Some(done) = completion.complete_ns else { continue };
        let bin = ((done / bin_ns) as usize).min(bins - 1);
        if matches!(completion.outcome, Outcome::Ok { .. }) {
            ok[bin] += 1;
        }
        latencies[bin].push(done - completion.invoke_ns);
    }
    let seconds = bin_ns as f64 / 1e9;
    let rate: Vec<f64> = ok.iter().map(|&n| n as f64 / seconds).collect();
    let (median, max): (Vec<Option<f64>>, Vec<Option<f64>>) = latencies
        .iter_mut()
        .map(|l| {
            l.sort_unstable();
            let ms = |ns: u64| ns as f64 / 1e6;
            (l.get(l.len() / 2).map(|&n| ms(n)), l.last().map(|&n| ms(n)))
        })
        .unzip();
    let rate_top = rate.iter().copied().fold(1.0, f64::max) * 1.1;
    let latency_top = max.iter().flatten().copied().fold(1.0, f64::max).max(1.0) * 1.5;
    let latency_bottom = 0.01f64;
    let total_height = 2.0 * PANEL_HEIGHT + 3.0 * MARGIN;
    let plot_width = WIDTH - 2.0 * MARGIN;
    let x = |ns: u64| MARGIN + plot_width * ns as f64 / (bins as u64 * bin_ns) as f64;
    let top1 = MARGIN;
    let top2 = 2.0 * MARGIN + PANEL_HEIGHT;
    let y_rate = |r: f64| top1 + PANEL_HEIGHT * (1.0 - r / rate_top);
    let y_latency = |ms: f64| {
        let span = latency_top.log10() - latency_bottom.log10();
        top2 + PANEL_HEIGHT * (1.0 - (ms.max(latency_bottom).log10() - latency_bottom.log10()) / span)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    for fault in faults {
        let (from, to) = (x(fault.start_ns), x(fault.end_ns.max(fault.start_ns)));
        let width = (to - from).max(1.0);
        for top in [top1, top2] {
            let _ = writeln!(
                out,
                r#"<rect x="{from:.1}" y="{top}" width="{width:.1}" height="{PANEL_HEIGHT}" fill="{}" opacity="0.6"><title>{} nodes {:?}</title></rect>"#,
                fault_colour(fault.kind.name()),
                fault.kind.name(),
                fault.nodes
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{from:.1}" y="{:.1}" font-size="9" transform="rotate(-90 {from:.1} {:.1})" text-anchor="end">{}</text>"#,
            top1 + 4.0,
            top1 + 4.0,
            fault.kind.name()
        );
    }
    for top in [top1, top2] {
        let _ = writeln!(
            out,
            r#"<rect x="{MARGIN}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" stroke="black"/>"#
        );
    }
    let polyline = |points: Vec<(f64, f64)>, colour: &str| {
        let text: Vec<String> = points.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        format!(
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            text.join(" ")
        )
    };
    let centre = |bin: usize| x(bin as u64 * bin_ns + bin_ns / 2);
    let _ = writeln!(
        out,
        "{}",
        polyline(
            rate.iter().enumerate().map(|(b, &r)| (centre(b), y_rate(r))).collect(),
            "#1f5fbf"
        )
    );
    for (series, colour) in [(&median, "#1f8f3f"), (&max, "#c0392b")] {
        let points: Vec<(f64, f64)> = series
            .iter()
            .enumerate()
            .filter_map(|(b, v)| v.map(|ms| (centre(b), y_latency(ms))))
            .collect();
        let _ = writeln!(out, "{}", polyline(points, colour));
    }
    // Axes: time in seconds under each panel, values on the left.
    let total_s = (bins as u64 * bin_ns) as f64 / 1e9;
    let step_s = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 3600.0]
        .into_iter()
        .find(|s| total_s / s <= 12.0)
        .unwrap_or(7200.0);
    let mut t = 0.0;
    while t <= total_s {
        let px = x((t * 1e9) as u64);
        for top in [top1, top2] {
            let _ = writeln!(
                out,
                r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{t}s</text>"#,
                top + PANEL_HEIGHT + 14.0
            );
        }
        t += step_s;
    }
    for fraction in [0.0, 0.5, 1.0] {
        let r = rate_top * fraction;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{r:.0}</text>"#,
            MARGIN - 4.0,
            y_rate(r) + 4.0
        );
    }
    let mut ms = latency_bottom;
    while ms <= latency_top {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{ms}</text>"#,
            MARGIN - 4.0,
            y_latency(ms) + 4.0
        );
        ms *= 10.0;
    }
    let _ = writeln!(
        out,
        r##"<text x="{MARGIN}" y="{:.1}" fill="#1f5fbf">acknowledged operations per second</text>"##,
        top1 - 6.0
    );
    let _ = writeln!(
        out,
        r##"<text x="{MARGIN}" y="{:.1}"><tspan fill="#1f8f3f">median</tspan> and <tspan fill="#c0392b">maximum</tspan> latency (ms, log) of the operations completed in each {seconds:.0} s; shaded: faults (red kill, orange stop, blue partition, purple other)</text>"##,
        top2 - 6.0
    );
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;
    use crate::nemesis::FaultKind;

    #[test]
    fn the_plot_has_a_band_per_fault_and_a_line_per_series() {
        let completions: Vec<Completion> = (0..100u64)
            .map(|i| Completion {
                process: 1,
                operation: Operation::Read { key: 1 },
                invoke_ns: i * 50_000_000,
                complete_ns: Some(i * 50_000_000 + 2_000_000),
                outcome: Outcome::Ok { value: None },
            })
            .collect();
        let fault = Fault {
            kind: FaultKind::KillLeader,
            nodes: vec![1],
            sides: vec![],
            leader_before: Some(1),
            leader_after: Some(2),
            start_ns: 1_000_000_000,
            end_ns: 2_000_000_000,
            snapshots_installed: 0,
            links: vec![],
            proxy: None,
            admin: vec![],
            caught_up: None,
            storage: None,
        };
        let svg = svg(&completions, &[fault], "run <1>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<title>kill-leader").count(), 2);
        assert!(svg.contains("run &lt;1&gt;"));
    }
}
