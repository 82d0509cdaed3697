//! Charts as plain SVG text: line charts (linear or log axes, one line per run) and horizontal
//! bar charts. Written here rather than taken from a plotting crate: the charts needed are
//! few and simple, and the plotting crates bring font rasterisers, image codecs or a
//! JavaScript runtime along; this is a few hundred lines with no dependency, and the output is
//! self-contained (no scripts, no fonts or styles fetched from anywhere).

use std::fmt::Write as _;

/// Line colours, one per run, in order (distinguishable, also in print).
pub const PALETTE: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// The colour of run `i`.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for SVG and HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// From 0 (or the smallest value, if negative) to a round number above the largest.
    Linear,
    /// Whole decades around the positive values.
    Log,
}

pub struct Axis {
    pub title: String,
    pub scale: Scale,
    /// Fixed ticks (value, label) instead of computed ones; they also set the range.
    pub ticks: Option<Vec<(f64, String)>>,
}

impl Axis {
    pub fn new(title: &str, scale: Scale) -> Axis {
        Axis { title: title.to_string(), scale, ticks: None }
    }
}

/// One line: a label, a colour and its points (x, y).
pub struct Line {
    pub label: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub lines: Vec<Line>,
}

pub const WIDTH: f64 = 760.0;
const PLOT_H: f64 = 300.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 38.0;
/// Below the plot: tick labels and the x title.
const BELOW: f64 = 52.0;
const LEGEND_ROW: f64 = 20.0;

/// A number for an axis or a table: 1.5M, 250k, 12, 0.35.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let (d, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if d.abs() >= 100.0 || d == d.trunc() {
        format!("{d:.0}")
    } else if d.abs() >= 10.0 {
        format!("{d:.1}")
    } else if d.abs() >= 0.1 {
        format!("{d:.2}")
    } else {
        format!("{d:.3}")
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{suffix}")
}

/// A round step giving about `n` intervals over `span`: 1, 2 or 5 × 10^k.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Range and ticks of an axis over `values`.
fn layout(axis: &Axis, values: &[f64]) -> (f64, f64, Vec<(f64, String)>) {
    if let Some(t) = &axis.ticks {
        let lo = t.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
        let hi = t.iter().map(|t| t.0).fold(f64::NEG_INFINITY, f64::max);
        let hi = values.iter().copied().fold(hi, f64::max);
        return (lo, if hi > lo { hi } else { lo + 1.0 }, t.clone());
    }
    match axis.scale {
        Scale::Linear => {
            let lo = values.iter().copied().fold(0.0, f64::min);
            let hi = values.iter().copied().fold(0.0, f64::max);
            let hi = if hi > lo { hi } else { lo + 1.0 };
            let step = nice_step(hi - lo, 5.0);
            let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
            let ticks =
                (0..=((hi - lo) / step).round() as i64).map(|k| lo + k as f64 * step).map(|v| (v, short(v))).collect();
            (lo, hi, ticks)
        }
        Scale::Log => {
            let pos = values.iter().copied().filter(|v| *v > 0.0);
            let lo = pos.clone().fold(f64::INFINITY, f64::min);
            let hi = pos.fold(0.0, f64::max);
            let (lo, hi) = if hi > 0.0 { (lo.log10().floor(), hi.log10().ceil()) } else { (0.0, 1.0) };
            let hi = if hi > lo { hi } else { lo + 1.0 };
            let every = ((hi - lo) / 8.0).ceil().max(1.0) as i64;
            let ticks = (lo as i64..=hi as i64)
                .filter(|k| (k - lo as i64) % every == 0)
                .map(|k| (10f64.powi(k as i32), short(10f64.powi(k as i32))))
                .collect();
            (10f64.powf(lo), 10f64.powf(hi), ticks)
        }
    }
}

/// Maps a value of an axis to [0, 1].
fn unit(scale: Scale, lo: f64, hi: f64, v: f64) -> f64 {
    match scale {
        Scale::Linear => (v - lo) / (hi - lo),
        Scale::Log => (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()),
    }
}

impl Chart {
    /// Height of the whole chart, legend included.
    pub fn height(&self) -> f64 {
        TOP + PLOT_H + BELOW + LEGEND_ROW * legend_rows(&self.lines) as f64 + 8.0
    }

    /// The chart as one `<svg>` element.
    pub fn svg(&self) -> String {
        let usable = |v: &f64, s: Scale| v.is_finite() && (s == Scale::Linear || *v > 0.0);
        let xs: Vec<f64> =
            self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)).filter(|v| usable(v, self.x.scale)).collect();
        let ys: Vec<f64> =
            self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).filter(|v| usable(v, self.y.scale)).collect();
        let (x0, x1, xt) = layout(&self.x, &xs);
        let (y0, y1, yt) = layout(&self.y, &ys);
        let pw = WIDTH - LEFT - RIGHT;
        let px = |v: f64| LEFT + unit(self.x.scale, x0, x1, v).clamp(0.0, 1.0) * pw;
        let py = |v: f64| TOP + PLOT_H - unit(self.y.scale, y0, y1, v).clamp(0.0, 1.0) * PLOT_H;
        let h = self.height();
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r##"<rect width="{WIDTH}" height="{h}" fill="#fff"/>"##);
        let _ = write!(s, r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#, esc(&self.title));
        for (v, label) in &yt {
            let y = py(*v);
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                esc(label)
            );
        }
        for (v, label) in &xt {
            let x = px(*v);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + PLOT_H,
                TOP + PLOT_H + 16.0,
                esc(label)
            );
        }
        let _ =
            write!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{PLOT_H}" fill="none" stroke="#888"/>"##);
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            TOP + PLOT_H + 38.0,
            esc(&self.x.title)
        );
        let _ = write!(
            s,
            r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + PLOT_H / 2.0,
            esc(&self.y.title)
        );
        for l in &self.lines {
            let pts: Vec<String> = l
                .points
                .iter()
                .filter(|(x, y)| usable(x, self.x.scale) && usable(y, self.y.scale))
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            match pts.len() {
                0 => {}
                1 => {
                    let (x, y) = pts[0].split_once(',').expect("x,y");
                    let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#, l.color);
                }
                _ => {
                    let _ = write!(
                        s,
                        r#"<polyline fill="none" stroke="{}" stroke-width="1.8" stroke-linejoin="round" points="{}"/>"#,
                        l.color,
                        pts.join(" ")
                    );
                }
            }
        }
        legend(&mut s, &self.lines, TOP + PLOT_H + BELOW);
        s.push_str("</svg>");
        s
    }
}

/// Legend entries per row.
const LEGEND_PER_ROW: usize = 4;

fn legend_rows(lines: &[Line]) -> usize {
    lines.len().div_ceil(LEGEND_PER_ROW)
}

fn legend(s: &mut String, lines: &[Line], top: f64) {
    let w = (WIDTH - LEFT - RIGHT) / LEGEND_PER_ROW as f64;
    for (i, l) in lines.iter().enumerate() {
        let x = LEFT + (i % LEGEND_PER_ROW) as f64 * w;
        let y = top + (i / LEGEND_PER_ROW) as f64 * LEGEND_ROW;
        let label: String = l.label.chars().take(28).collect();
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="14" height="4" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y + 5.0,
            l.color,
            x + 20.0,
            y + 11.0,
            esc(&label)
        );
    }
}

/// Horizontal bars: one figure per run.
pub struct Bars {
    pub title: String,
    pub unit: String,
    pub bars: Vec<(String, &'static str, f64)>,
}

impl Bars {
    pub fn height(&self) -> f64 {
        40.0 + self.bars.len() as f64 * 26.0 + 10.0
    }

    pub fn svg(&self) -> String {
        let h = self.height();
        let label_w = 200.0;
        let max = self.bars.iter().map(|b| b.2).fold(0.0, f64::max);
        let span = WIDTH - label_w - 110.0;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r##"<rect width="{WIDTH}" height="{h}" fill="#fff"/>"##);
        let _ = write!(s, r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#, esc(&self.title));
        for (i, (label, color, v)) in self.bars.iter().enumerate() {
            let y = 40.0 + i as f64 * 26.0;
            let w = if max > 0.0 && v.is_finite() { (v / max * span).max(1.0) } else { 0.0 };
            let label: String = label.chars().take(30).collect();
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{:.1}">{} {}</text>"#,
                label_w - 8.0,
                y + 13.0,
                esc(&label),
                label_w + w + 6.0,
                y + 13.0,
                esc(&short(*v)),
                esc(&self.unit)
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// Several charts stacked in one SVG document.
pub fn stack(parts: &[(String, f64)]) -> String {
    let total: f64 = parts.iter().map(|p| p.1).sum();
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total}" viewBox="0 0 {WIDTH} {total}">"#
    );
    let mut y = 0.0;
    for (svg, h) in parts {
        // A nested <svg> is positioned by x/y on the element itself.
        let _ = write!(s, r#"<svg y="{y}"{}"#, &svg["<svg".len()..]);
        y += h;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(250_000.0), "250k");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(0.35), "0.35");
        assert_eq!(short(0.001), "0.001");
        assert_eq!(short(1000.0), "1000");
    }

    #[test]
    fn axes_are_round() {
        let (lo, hi, t) = layout(&Axis::new("", Scale::Linear), &[3.0, 870.0]);
        assert_eq!((lo, hi), (0.0, 1000.0));
        assert_eq!(t.len(), 6);
        let (lo, hi, t) = layout(&Axis::new("", Scale::Log), &[0.03, 2.5]);
        assert_eq!((lo, hi), (0.01, 10.0));
        assert_eq!(t.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), ["0.01", "0.1", "1", "10"]);
    }

    #[test]
    fn draws_lines_and_escapes() {
        let c = Chart {
            title: "a < b".into(),
            x: Axis::new("t (s)", Scale::Linear),
            y: Axis::new("per s", Scale::Linear),
            lines: vec![
                Line { label: "x&y".into(), color: color(0), points: vec![(1.0, 5.0), (2.0, 7.0)] },
                Line { label: "one".into(), color: color(1), points: vec![(1.0, 3.0)] },
                Line { label: "none".into(), color: color(2), points: vec![(f64::NAN, 1.0)] },
            ],
        };
        let s = c.svg();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("a &lt; b") && s.contains("x&amp;y"));
        assert_eq!(s.matches("<polyline").count(), 1);
        assert_eq!(s.matches("<circle").count(), 1);
        let all = stack(&[(s.clone(), c.height()), (s, c.height())]);
        assert_eq!(all.matches("<svg").count(), 3);
    }
}
