//! Minimal SVG line charts, written by hand: two charts do not justify a plotting dependency.

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

/// A chart with linear axes from 0 (or `log_x` for a log10 x axis).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> String {
    let fx = |x: f64| if log_x { x.max(1e-3).log10() } else { x };
    let all = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0f64);
    for &(x, y) in all {
        x0 = x0.min(fx(x));
        x1 = x1.max(fx(x));
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if !log_x {
        x0 = 0.0;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.05 };
    let px = |x: f64| LEFT + (fx(x) - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / y1 * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
    // Axes and ticks.
    let _ = writeln!(
        svg,
        "<path d=\"M{LEFT},{TOP} V{} H{}\" stroke=\"black\" fill=\"none\"/>",
        H - BOTTOM,
        W - RIGHT
    );
    for i in 0..=5 {
        let y = y1 * i as f64 / 5.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            py(y) + 4.0,
            tick(y)
        );
        let _ = writeln!(
            svg,
            "<path d=\"M{LEFT},{0} H{1}\" stroke=\"#ddd\"/>",
            py(y),
            W - RIGHT
        );
        let xv = x0 + (x1 - x0) * i as f64 / 5.0;
        let shown = if log_x { 10f64.powf(xv) } else { xv };
        let xp = LEFT + (xv - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let _ = writeln!(
            svg,
            "<text x=\"{xp}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - BOTTOM + 16.0,
            tick(shown)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (TOP + H - BOTTOM) / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" stroke=\"{}\" stroke-width=\"2\" fill=\"none\"/>",
                path.join(" "),
                s.color
            );
        }
        // Markers where there are few points (a sweep), so that a single point still shows.
        if path.len() <= 20 {
            for (x, y) in path.iter().filter_map(|p| p.split_once(',')) {
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"3.5\" fill=\"{}\"/>",
                    s.color
                );
            }
        }
        let ly = TOP + 8.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            "<path d=\"M{0},{ly} h18\" stroke=\"{1}\" stroke-width=\"3\"/>",
            LEFT + 12.0,
            s.color
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            LEFT + 36.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The empirical CDF of `values` as chart points (x = value, y = fraction ≤ x, in %).
pub fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, &x)| (x, 100.0 * (i + 1) as f64 / n))
        .collect()
}

fn tick(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_lines_and_legend() {
        let s = Series {
            name: "a<b".into(),
            color: "red",
            points: vec![(1.0, 2.0), (2.0, 4.0)],
        };
        let svg = line_chart("t", "x", "y", &[s], false);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("a&lt;b"));
        assert_eq!(cdf(&[3.0, 1.0, 2.0]).last().unwrap(), &(3.0, 100.0));
    }
}
