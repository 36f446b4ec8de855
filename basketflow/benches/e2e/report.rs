//! The figures' presentation: percentiles and the latency plot.

use serde_json::{json, Value};

/// Percentile `q` (0..=100) of sorted `xs`.
pub fn pct(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[((q / 100.0) * (xs.len() - 1) as f64).round() as usize]
}

/// Count, p50, p95, p99 and max of `xs`.
pub fn summary(mut xs: Vec<f64>) -> Value {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({"n": xs.len(), "p50": pct(&xs, 50.0), "p95": pct(&xs, 95.0), "p99": pct(&xs, 99.0), "max": xs.last().copied().unwrap_or(f64::NAN)})
}

/// Log-log SVG of latency percentiles against offered rate, graph and broker.
pub fn plot(latency: &[Value]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 30.0, 190.0);
    let rates: Vec<f64> = latency.iter().filter_map(|l| l["rate"].as_f64()).collect();
    let series = [
        (
            "event -> decision p50",
            "event_to_decision_ms",
            "p50",
            "#1f77b4",
            "",
        ),
        (
            "event -> decision p99",
            "event_to_decision_ms",
            "p99",
            "#1f77b4",
            "6,4",
        ),
        (
            "broker round trip p50",
            "broker_round_trip_ms",
            "p50",
            "#ff7f0e",
            "",
        ),
        (
            "broker round trip p99",
            "broker_round_trip_ms",
            "p99",
            "#ff7f0e",
            "6,4",
        ),
        (
            "order -> ClickHouse p99",
            "order_to_clickhouse_ms",
            "p99",
            "#2ca02c",
            "2,3",
        ),
    ];
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, k, p, _, _)| latency.iter().filter_map(move |l| l[*k][*p].as_f64()))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let (xmin, xmax) = (
        rates.iter().cloned().fold(f64::MAX, f64::min).log10() - 0.1,
        rates.iter().cloned().fold(0.0, f64::max).log10() + 0.1,
    );
    let ymin = values
        .iter()
        .cloned()
        .fold(f64::MAX, f64::min)
        .max(0.1)
        .log10()
        .floor();
    let ymax = values
        .iter()
        .cloned()
        .fold(0.0, f64::max)
        .max(1.0)
        .log10()
        .ceil();
    let x = |r: f64| left + (r.log10() - xmin) / (xmax - xmin) * (w - left - right);
    let y = |v: f64| h - bottom - (v.max(0.1).log10() - ymin) / (ymax - ymin) * (h - top - bottom);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    s.push_str(&format!("<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">latency against offered rate (log-log)</text>\n", (w - right + left) / 2.0));
    for e in (ymin as i32)..=(ymax as i32) {
        let v = 10f64.powi(e);
        s.push_str(&format!("<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v} ms</text>\n", w - right, left - 6.0, y(v) + 4.0, y = y(v)));
    }
    for r in &rates {
        s.push_str(&format!("<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{r}/s</text>\n", h - bottom, h - bottom + 18.0, x = x(*r)));
    }
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">offered events/s</text>\n",
        (w - right + left) / 2.0,
        h - 10.0
    ));
    for (i, (label, key, p, colour, dash)) in series.iter().enumerate() {
        let points: Vec<String> = latency
            .iter()
            .filter_map(|l| Some((l["rate"].as_f64()?, l[*key][*p].as_f64()?)))
            .filter(|(_, v)| v.is_finite())
            .map(|(r, v)| format!("{:.1},{:.1}", x(r), y(v)))
            .collect();
        s.push_str(&format!("<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>\n", points.join(" ")));
        for pt in &points {
            let (px, py) = pt.split_once(',').unwrap();
            s.push_str(&format!(
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{colour}\"/>\n"
            ));
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        s.push_str(&format!("<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{label}</text>\n", w - right + 10.0, w - right + 40.0, w - right + 45.0, ly + 4.0));
    }
    s.push_str("</svg>\n");
    s
}
