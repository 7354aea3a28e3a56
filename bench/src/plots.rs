//! `relay-bench plot`: SVG figures from the JSON the scenarios write.
//!
//! Reads, from `--dir`, whichever of these exist and draws one SVG for each:
//! - `baselines.json` (`compare`) → `baselines.svg`: relayed pkt/s of every system at fan-out
//!   1, median with a min–max bar;
//! - `throughput.json` (`throughput --json`) → `throughput-fanout.svg`: packets relayd sends
//!   per second by fan-out (one room, 1200-byte SRTP_80 rows), socket vs XDP backend,
//!   median with min–max;
//! - `latency.json` (`latency --json`) → `latency-cdf.svg`: one-way latency CDF per backend
//!   and load fraction (rows without a CDF, from older runs, are skipped with a note);
//! - `flood.json` (`flood --json`) → `flood-timeline.svg`: verified goodput per 100 ms, per
//!   backend, for the run with the median flood ratio, with the flood phase shaded.
//!
//! Every figure keeps its data's min and max visible: a median alone hides the noise of a
//! shared machine. SVG text is left to the viewer's fonts (plotters' SVG backend, no font
//! files), so the bench stays free of system libraries.

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::prelude::*;

use crate::report::{self, CompareReport, FloodRow, FloodRun, LatencyRow, ThroughputRow};

/// `relay-bench plot` options.
#[derive(clap::Args)]
pub struct Args {
    /// Directory with the JSON reports; the SVGs are written next to them.
    #[arg(long, default_value = "docs/benchmarks")]
    dir: PathBuf,
}

const SIZE: (u32, u32) = (800, 480);
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Maps plotters' drawing errors (generic over the backend) into anyhow.
fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// Bars of median pkt/s with min–max whiskers, one per system.
fn baselines(v: &CompareReport, out: &Path) -> Result<()> {
    let bars: Vec<(String, f64, f64, f64)> =
        v.systems.iter().filter_map(|s| s.pps.map(|p| (s.name.clone(), p.median, p.min, p.max))).collect();
    let top = bars.iter().map(|b| b.3).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Relayed pkt/s at fan-out 1, max loss-free rate (median, min–max)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5..bars.len() as f64 - 0.5, 0.0..top)
        .map_err(plot_err)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .y_desc("packets per second")
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(plot_err)?;
    for (i, (_, median, lo, hi)) in bars.iter().enumerate() {
        let (c, x) = (COLORS[i % COLORS.len()], i as f64);
        chart
            .draw_series(std::iter::once(Rectangle::new([(x - 0.35, 0.0), (x + 0.35, *median)], c.mix(0.6).filled())))
            .map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(x, *lo, *median, *hi, BLACK, 12)))
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Lines of relayd's output pkt/s by fan-out, per backend (AF_XDP generator rows).
fn throughput(rows: &[ThroughputRow], out: &Path) -> Result<()> {
    // Per backend: (fan-out, median, min, max) of packets sent per second.
    type Point = (f64, f64, f64, f64);
    let mut series: Vec<(String, Vec<Point>)> = Vec::new();
    for r in rows {
        // The fan-out curve: the AF_XDP generator's rows of one room, 1200-byte SRTP_80.
        let other_shape = r.size != 1200 || r.rooms != 1 || r.profile != "AES_CM_128_HMAC_SHA1_80";
        // A configuration whose every run was left out (damaged input) has no figure.
        let (Some(median), Some(min), Some(max)) = (r.in_pps_median, r.in_pps_min, r.in_pps_max) else { continue };
        if r.generator == "socket" || other_shape {
            continue;
        }
        let backend = r.backend.clone();
        let f = r.fanout as f64;
        let point = (f, median * f, min * f, max * f);
        // A later row for the same fan-out (a re-run in the same report) replaces it.
        match series.iter_mut().find(|s| s.0 == backend) {
            Some(s) => match s.1.iter_mut().find(|p| p.0 == f) {
                Some(p) => *p = point,
                None => s.1.push(point),
            },
            None => series.push((backend, vec![point])),
        }
    }
    for s in &mut series {
        s.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let max_f = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0, f64::max);
    let top = series.iter().flat_map(|s| s.1.iter().map(|p| p.3)).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("relayd: packets sent per second by fan-out (1200 B SRTP, 1 worker)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_f + 1.0, 0.0..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("fan-out (receivers per room)")
        .y_desc("packets sent per second")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(plot_err)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| ErrorBar::new_vertical(p.0, p.2, p.1, p.3, c, 10))).map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Latency CDFs (x: µs, log scale; y: quantile), one line per backend and fraction.
fn latency(rows: &[LatencyRow], out: &Path) -> Result<bool> {
    let mut lines = Vec::new();
    for r in rows.iter().filter(|r| !r.cdf_us.is_empty()) {
        let pts: Vec<(f64, f64)> = r.cdf_us.iter().map(|&(q, us)| ((us as f64).max(1.0), q)).collect();
        let label = format!("{} at {:.0}% ({:.0} pkt/s)", r.backend, r.fraction * 100.0, r.rate_pps);
        lines.push((label, pts));
    }
    if lines.is_empty() {
        return Ok(false);
    }
    let max_x = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("One-way latency CDF through relayd (verified packets)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..max_x).log_scale(), 0.0..1.0)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("latency, µs (log scale)").y_desc("fraction of packets").draw().map_err(plot_err)?;
    for (i, (label, pts)) in lines.into_iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(true)
}

/// Verified goodput per tick for each backend's median run, flood phase shaded.
fn flood(rows: &[FloodRow], out: &Path) -> Result<()> {
    let mut lines = Vec::new();
    let mut seconds: f64 = 0.0;
    for r in rows {
        seconds = seconds.max(r.seconds);
        let ratio = |run: &FloodRun| run.goodput_pps[1] / run.goodput_pps[0].max(1.0);
        let mut sorted: Vec<&FloodRun> = r.runs_detail.iter().collect();
        sorted.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
        let Some(run) = sorted.get(sorted.len() / 2) else { continue };
        let tick_s = run.timeline_tick_ms as f64 / 1000.0;
        let pts: Vec<(f64, f64)> = run
            .timeline_verified
            .iter()
            .enumerate()
            .map(|(i, &n)| ((i + 1) as f64 * tick_s, n as f64 / tick_s))
            .collect();
        lines.push((r.backend.clone(), pts));
    }
    let top = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.2;
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Verified goodput while a spoofed flood hits relayd (median run)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..seconds.max(1.0), 0.0..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("verified packets per second")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(plot_err)?;
    let (a, b) = (seconds / 3.0, 2.0 * seconds / 3.0);
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(a, 0.0), (b, top)],
            RGBColor(0xff, 0xcc, 0xcc).mix(0.5).filled(),
        )))
        .map_err(plot_err)?
        .label("flood")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], RGBColor(0xff, 0xcc, 0xcc).filled()));
    for (i, (label, pts)) in lines.into_iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Draws every figure whose data is in `dir`; fails if there is none.
pub fn run(a: Args) -> Result<()> {
    let mut drawn = Vec::new();
    if let Some(v) = report::read::<CompareReport>(&a.dir.join("baselines.json"))? {
        baselines(&v, &a.dir.join("baselines.svg"))?;
        drawn.push("baselines.svg");
    }
    if let Some(v) = report::read::<Vec<ThroughputRow>>(&a.dir.join("throughput.json"))? {
        throughput(&v, &a.dir.join("throughput-fanout.svg"))?;
        drawn.push("throughput-fanout.svg");
    }
    if let Some(v) = report::read::<Vec<LatencyRow>>(&a.dir.join("latency.json"))? {
        if latency(&v, &a.dir.join("latency-cdf.svg"))? {
            drawn.push("latency-cdf.svg");
        } else {
            eprintln!(
                "note: latency.json has no CDF (an older run); re-run `relay-bench latency --json` for latency-cdf.svg"
            );
        }
    }
    if let Some(v) = report::read::<Vec<FloodRow>>(&a.dir.join("flood.json"))? {
        flood(&v, &a.dir.join("flood-timeline.svg"))?;
        drawn.push("flood-timeline.svg");
    }
    if drawn.is_empty() {
        anyhow::bail!(
            "no report JSON in {} (baselines.json, throughput.json, latency.json or flood.json)",
            a.dir.display()
        );
    }
    for d in drawn {
        println!("wrote {}", a.dir.join(d).display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay::tempdir::TempDir;

    #[test]
    fn flood_timeline_is_drawn_from_a_report() {
        let dir = TempDir::new("plots-flood").unwrap();
        let d = dir.path().to_owned();
        let run = |g: f64| {
            serde_json::json!({"goodput_pps": [10.0, g, 10.0], "sent_pps": [10.0, 10.0, 10.0],
            "flood_pps": 1000.0, "latency_us_p50_p99_quiet": [1.0, 2.0], "latency_us_p50_p99_flood": [1.0, 2.0],
            "auth_failed": 0, "engine_drops_during_flood": {}, "xdp_verdicts_during_flood": {},
            "timeline_tick_ms": 100, "timeline_verified": [1, 1, 0, 1]})
        };
        let v: Vec<FloodRow> = serde_json::from_value(serde_json::json!([{"backend": "xdp", "seconds": 0.4,
            "legit_pps": 10.0, "size": 1200, "runs": 3, "goodput_ratio_median": 0.9, "goodput_ratio_min": 0.5,
            "goodput_ratio_max": 1.0, "flood_pps_median": 1000.0, "flood_p99_us_median": 2.0,
            "runs_detail": [run(10.0), run(5.0), run(9.0)]}]))
        .unwrap();
        let out = d.join("f.svg");
        flood(&v, &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("xdp") && svg.contains("flood"), "{svg}");
    }

    #[test]
    fn latency_without_cdf_draws_nothing_and_bad_json_is_an_error() {
        let dir = TempDir::new("plots-lat").unwrap();
        let d = dir.path().to_owned();
        let v: Vec<LatencyRow> = serde_json::from_value(serde_json::json!([{"backend": "xdp", "fraction": 0.5,
            "max_loss_free_pps": 100.0, "max_generator_limited": false, "rate_pps": 50.0, "size": 1200,
            "seconds": 1.5, "runs": 1, "p50_us": [1.0, 1.0, 1.0], "p99_us": [1.0, 1.0, 1.0],
            "p999_us": [1.0, 1.0, 1.0], "loss_median": 0.0, "runs_detail": []}]))
        .unwrap();
        assert!(!latency(&v, &d.join("l.svg")).unwrap());
        assert!(!d.join("l.svg").exists());
        std::fs::write(d.join("flood.json"), "{not json").unwrap();
        let e = run(Args { dir: d.clone() }).unwrap_err();
        assert!(format!("{e:#}").contains("parsing"), "{e:#}");
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let dir = TempDir::new("plots-empty").unwrap();
        let d = dir.path().to_owned();
        let e = run(Args { dir: d.clone() }).unwrap_err();
        assert!(e.to_string().contains("no report JSON"), "{e}");
    }

    #[test]
    fn the_committed_reports_plot() {
        let d = TempDir::new("plots-committed").unwrap();
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks");
        for f in ["baselines.json", "throughput.json", "latency.json", "flood.json"] {
            std::fs::copy(docs.join(f), d.join(f)).unwrap();
        }
        run(Args { dir: d.path().to_owned() }).unwrap();
        for f in ["baselines.svg", "throughput-fanout.svg", "latency-cdf.svg", "flood-timeline.svg"] {
            let svg = std::fs::read_to_string(d.join(f)).unwrap();
            assert!(svg.starts_with("<svg") && svg.len() > 1000, "{f}: {svg}");
        }
    }
}
