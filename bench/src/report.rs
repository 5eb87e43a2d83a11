//! `--report FILE`: one self-contained HTML page per run (inline SVG, no
//! script, no network): the machine and command, a table of the points with
//! their floors, throughput over time per point, and each point's latency
//! percentile plot on log scales (percentile as 1/(1-q), latency in µs).

use std::fmt::Write;

use crate::cluster::{Axis, PointResult};
use crate::machine::Machine;

/// Colours of the points' lines, in order (repeats past eight points).
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// The plots' size in SVG units, and their margins for the axes' labels.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 40.0;
const MARGIN_TOP: f64 = 20.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// The percentile plot's x axis ends at 99.999 % (1/(1-q) = 10^5).
const PERCENTILE_DECADES: f64 = 5.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The label of a point: the swept option's value, or "run".
fn label(result: &PointResult, axis: Option<Axis>) -> String {
    let s = &result.settings;
    match axis {
        Some(Axis::Clients) => format!("clients={}", s.clients),
        Some(Axis::Payload) => format!("payload={}", s.payload),
        Some(Axis::Groups) => format!("groups={}", s.groups),
        Some(Axis::Shards) => format!("shards={}", s.shards),
        Some(Axis::Rate) => format!("rate={}", s.rate.unwrap_or(0)),
        None => "run".into(),
    }
}

/// The page.
pub fn page(results: &[PointResult], machine: &Machine, command: &str, axis: Option<Axis>) -> String {
    let mut html = String::new();
    let mut first = results.first().map(|r| r.settings.describe()).unwrap_or_default();
    if let Some(axis) = axis {
        let name = serde_json::to_string(&axis).unwrap_or_default();
        first = format!("{first} (the first point; the sweep varies {})", name.trim_matches('"'));
    }
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>coraft-bench report</title>\n\
         <style>body{{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}\
         code{{background:#f4f4f4;padding:1px 3px}}svg{{background:#fff;border:1px solid #ddd}}</style>\n\
         </head><body>\n<h1>coraft-bench report</h1>\n\
         <p><b>Command</b> <code>{}</code></p>\n<p><b>Machine</b> {}</p>\n<p><b>Configuration</b> {}</p>\n",
        escape(command),
        escape(&machine.describe()),
        escape(&first)
    );
    html.push_str(
        "<h2>Points</h2>\n<table><tr><th>point</th><th>ops/s</th><th>p50 µs</th><th>p99 µs</th><th>p99.9 µs</th>\
         <th>max µs</th><th>fdatasync floor µs</th><th>TCP RTT floor µs</th><th>floor µs</th><th>p50 / floor</th>\
         <th>replication floor ops/s</th><th>CPU µs/op</th><th>errors</th></tr>\n",
    );
    for result in results {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.0}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
            escape(&label(result, axis)),
            result.ops_per_s(),
            result.quantile(0.5),
            result.quantile(0.99),
            result.quantile(0.999),
            result.latency_us.max(),
            result.floors.fsync_p50_us,
            result.floors.tcp_rtt_p50_us,
            result.floor_us(),
            result.quantile(0.5) as f64 / result.floor_us().max(1.0),
            result
                .replication_floor
                .as_ref()
                .map_or("—".into(), |f| format!("{:.0}", f.ops_per_s)),
            result.cpu_us_per_op(),
            result.errors + result.unsent,
        );
    }
    html.push_str("</table>\n<h2>Throughput over time</h2>\n");
    html.push_str(&throughput_plot(results, axis));
    html.push_str(
        "\n<h2>Latency by percentile</h2>\n<p>Log scales; the dashed lines are each point's floor \
         (what one request cannot beat on this machine).</p>\n",
    );
    html.push_str(&percentile_plot(results, axis));
    html.push_str("\n</body></html>\n");
    html
}

fn legend(svg: &mut String, results: &[PointResult], axis: Option<Axis>) {
    for (index, result) in results.iter().enumerate() {
        let y = MARGIN_TOP + 14.0 * index as f64 + 10.0;
        let x = WIDTH - MARGIN_RIGHT - 130.0;
        let _ = write!(
            svg,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            x + 20.0,
            COLOURS[index % COLOURS.len()],
            x + 25.0,
            y + 4.0,
            escape(&label(result, axis))
        );
    }
}

fn frame(svg: &mut String, id: &str, x_title: &str, y_title: &str) {
    let _ = write!(
        svg,
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\">\
         <rect x=\"{MARGIN_LEFT}\" y=\"{MARGIN_TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{x_title}</text>\
         <text x=\"14\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">{y_title}</text>",
        WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
        HEIGHT - MARGIN_TOP - MARGIN_BOTTOM,
        MARGIN_LEFT + (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / 2.0,
        HEIGHT - 10.0,
        MARGIN_TOP + (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) / 2.0,
        MARGIN_TOP + (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM) / 2.0,
    );
}

fn x_tick(svg: &mut String, x: f64, text: &str) {
    let bottom = HEIGHT - MARGIN_BOTTOM;
    let _ = write!(
        svg,
        "<line x1=\"{x:.1}\" y1=\"{bottom}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#888\"/>\
         <text x=\"{x:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{text}</text>",
        bottom + 5.0,
        bottom + 18.0
    );
}

fn y_tick(svg: &mut String, y: f64, text: &str) {
    let _ = write!(
        svg,
        "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
         <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{text}</text>",
        MARGIN_LEFT,
        WIDTH - MARGIN_RIGHT,
        MARGIN_LEFT - 5.0,
        y + 4.0
    );
}

/// Requests answered per second of the measurement, one line per point.
fn throughput_plot(results: &[PointResult], axis: Option<Axis>) -> String {
    let mut svg = String::new();
    frame(&mut svg, "throughput", "seconds into the measurement", "ops/s");
    let seconds = results.iter().map(|r| r.timeline.len()).max().unwrap_or(1).max(1) as f64;
    let peak = results
        .iter()
        .flat_map(|r| r.timeline.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x_of = |second: f64| MARGIN_LEFT + plot_width * second / seconds;
    let y_of = |ops: f64| MARGIN_TOP + plot_height * (1.0 - ops / peak);
    for tick in 0..=5 {
        let ops = peak / 1.1 * tick as f64 / 5.0;
        y_tick(&mut svg, y_of(ops), &format!("{ops:.0}"));
    }
    let step = (seconds / 10.0).ceil().max(1.0) as usize;
    for second in (0..=seconds as usize).step_by(step) {
        x_tick(&mut svg, x_of(second as f64), &second.to_string());
    }
    for (index, result) in results.iter().enumerate() {
        // Each sample covers one second; draw it at the second's end.
        let points: Vec<String> = std::iter::once((0.0, result.timeline.first().copied().unwrap_or(0)))
            .chain(
                result
                    .timeline
                    .iter()
                    .enumerate()
                    .map(|(i, &ops)| (i as f64 + 1.0, ops)),
            )
            .map(|(second, ops)| format!("{:.1},{:.1}", x_of(second), y_of(ops as f64)))
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            COLOURS[index % COLOURS.len()],
            points.join(" ")
        );
    }
    legend(&mut svg, results, axis);
    svg.push_str("</svg>");
    svg
}

/// Latency against percentile, both on log scales, one line per point.
fn percentile_plot(results: &[PointResult], axis: Option<Axis>) -> String {
    let mut svg = String::new();
    frame(&mut svg, "percentiles", "percentile", "latency (µs)");
    let plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let highest = results
        .iter()
        .map(|r| r.latency_us.max().max(r.floor_us() as u64))
        .max()
        .unwrap_or(10)
        .max(10) as f64;
    let lowest = results
        .iter()
        .map(|r| r.latency_us.min().min(r.floor_us().max(1.0) as u64))
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let (low_decade, high_decade) = (
        lowest.log10().floor(),
        highest.log10().ceil().max(lowest.log10().floor() + 1.0),
    );
    let x_of = |quantile: f64| {
        let decades = (1.0 / (1.0 - quantile).max(1e-9)).log10().min(PERCENTILE_DECADES);
        MARGIN_LEFT + plot_width * decades / PERCENTILE_DECADES
    };
    let y_of =
        |us: f64| MARGIN_TOP + plot_height * (1.0 - (us.max(1.0).log10() - low_decade) / (high_decade - low_decade));
    for decade in low_decade as i32..=high_decade as i32 {
        let us = 10f64.powi(decade);
        let text = if us >= 1e6 {
            format!("{} s", us / 1e6)
        } else if us >= 1e3 {
            format!("{} ms", us / 1e3)
        } else {
            format!("{us} µs")
        };
        y_tick(&mut svg, y_of(us), &text);
    }
    for (quantile, text) in [
        (0.0, "0 %"),
        (0.9, "90 %"),
        (0.99, "99 %"),
        (0.999, "99.9 %"),
        (0.9999, "99.99 %"),
        (0.99999, "99.999 %"),
    ] {
        x_tick(&mut svg, x_of(quantile), text);
    }
    for (index, result) in results.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let mut points = Vec::new();
        if !result.latency_us.is_empty() {
            for value in result.latency_us.iter_quantiles(5) {
                let quantile = value.quantile_iterated_to();
                if quantile >= 1.0 {
                    break;
                }
                points.push(format!(
                    "{:.1},{:.1}",
                    x_of(quantile),
                    y_of(value.value_iterated_to() as f64)
                ));
            }
            points.push(format!("{:.1},{:.1}", x_of(1.0), y_of(result.latency_us.max() as f64)));
        }
        let _ = write!(
            svg,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        let floor = y_of(result.floor_us());
        let _ = write!(
            svg,
            "<line class=\"floor\" x1=\"{MARGIN_LEFT}\" y1=\"{floor:.1}\" x2=\"{}\" y2=\"{floor:.1}\" \
             stroke=\"{colour}\" stroke-dasharray=\"4 4\"/>",
            WIDTH - MARGIN_RIGHT
        );
    }
    legend(&mut svg, results, axis);
    svg.push_str("</svg>");
    svg
}
