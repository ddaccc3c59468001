//! `tinfer bench attention --svg`: time against length as a self-contained SVG.

use super::bench_attention::{Phase, Record};

/// Time against length, one line per (variant, kv), for each phase: a self-contained SVG.
pub fn svg(records: &[Record], title: &str) -> String {
    let phases = [Phase::Prefill, Phase::Decode];
    let (w, h, pad) = (460.0, 340.0, 60.0);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"13\">{}</text>\n",
        2.0 * w,
        h + 30.0,
        title
    );
    for (pi, phase) in phases.iter().enumerate() {
        let recs: Vec<&Record> = records.iter().filter(|r| r.phase == *phase).collect();
        if recs.is_empty() {
            continue;
        }
        let x0 = pi as f64 * w;
        let lx = |n: usize| (n as f64).log2();
        let (nmin, nmax) = recs.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
            (a.min(lx(r.seq_len)), b.max(lx(r.seq_len)))
        });
        let ly = |ms: f64| ms.max(1e-3).log10();
        let (tmin, tmax) = recs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(ly(r.ms)), b.max(ly(r.ms))));
        let (tmin, tmax) = (tmin.floor(), tmax.ceil().max(tmin.floor() + 1.0));
        let px = |n: usize| x0 + pad + (lx(n) - nmin) / (nmax - nmin).max(1e-9) * (w - 1.5 * pad);
        let py = |ms: f64| 30.0 + h - pad - (ly(ms) - tmin) / (tmax - tmin) * (h - 1.5 * pad);
        s += &format!(
            "<text x=\"{}\" y=\"40\" font-size=\"12\">{phase:?}: ms per call (log) vs sequence length (log2)</text>\n",
            x0 + pad
        );
        s += &format!(
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/><line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{3}\" stroke=\"black\"/>\n",
            x0 + pad,
            30.0 + h - pad,
            x0 + w - pad / 2.0,
            30.0 + pad / 2.0
        );
        let mut lens: Vec<usize> = recs.iter().map(|r| r.seq_len).collect();
        lens.sort();
        lens.dedup();
        for &n in &lens {
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{n}</text>\n",
                px(n),
                30.0 + h - pad + 15.0
            );
        }
        let mut d = tmin;
        while d <= tmax {
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                x0 + pad - 5.0,
                py(10f64.powf(d)) + 4.0,
                10f64.powf(d)
            );
            d += 1.0;
        }
        let mut series: Vec<(&str, &str)> = recs.iter().map(|r| (r.variant, r.kv)).collect();
        series.sort();
        series.dedup();
        for (si, (variant, kv)) in series.iter().enumerate() {
            let pts: Vec<String> = lens
                .iter()
                .filter_map(|&n| {
                    recs.iter()
                        .find(|r| r.variant == *variant && r.kv == *kv && r.seq_len == n)
                        .map(|r| format!("{:.1},{:.1}", px(n), py(r.ms)))
                })
                .collect();
            let c = colors[si % colors.len()];
            let dash = if *kv == "contiguous" {
                " stroke-dasharray=\"5,3\""
            } else {
                ""
            };
            s += &format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
                pts.join(" ")
            );
            s += &format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{variant} / {kv}</text>\n",
                x0 + pad + 10.0,
                60.0 + 14.0 * si as f64
            );
        }
    }
    s + "</svg>\n"
}
