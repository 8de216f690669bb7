//! Medians, spreads and ratios; the table, the JSON and the SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::topo::Side;

/// One figure the comparison reports.
pub struct Metric {
    /// Key in the JSON and in each run's values.
    pub key: &'static str,
    /// What it is.
    pub label: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Whether more is better.
    pub higher_better: bool,
    /// In the main table and the chart (else: supporting figures).
    pub headline: bool,
    /// The kernel's and OVS's figure to compare with, when they have no figure of their own
    /// under `key` (a vxmesh-only mode compared with their only one).
    pub kernel_key: Option<&'static str>,
}

const fn m(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher_better: bool,
    headline: bool,
) -> Metric {
    Metric {
        key,
        label,
        unit,
        higher_better,
        headline,
        kernel_key: None,
    }
}

/// A vxmesh-only figure compared with the kernel's `kernel_key` (lower is better).
const fn vs(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    kernel_key: &'static str,
) -> Metric {
    Metric {
        kernel_key: Some(kernel_key),
        ..m(key, label, unit, false, true)
    }
}

/// As [`vs`], for a figure where higher is better.
const fn vs_higher(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    kernel_key: &'static str,
) -> Metric {
    Metric {
        higher_better: true,
        ..vs(key, label, unit, kernel_key)
    }
}

/// Every figure, in table order.
pub const METRICS: &[Metric] = &[
    m(
        "tcp_gbps",
        "TCP throughput c11 -> c21 (iperf3)",
        "Gbit/s",
        true,
        true,
    ),
    vs_higher(
        "tcp_offl_gbps",
        "TCP throughput c11 -> c21, vxmesh --afxdp-offloads (kernel, OVS: as above)",
        "Gbit/s",
        "tcp_gbps",
    ),
    m(
        "tcp_tap_gbps",
        "TCP throughput c12 -> c22 (iperf3; TAPs with offloads on vxmesh)",
        "Gbit/s",
        true,
        true,
    ),
    m(
        "udp64_rx_pps",
        "UDP 64 B rx c11 -> c21 (iperf3, server-counted)",
        "pkt/s",
        true,
        true,
    ),
    m(
        "udp64_cpu_s_per_mpkt",
        "CPU per million UDP packets (whole machine)",
        "CPU s/Mpkt",
        false,
        true,
    ),
    m("ping_p50_us", "ping RTT p50 c11 -> c21", "us", false, true),
    m("ping_p99_us", "ping RTT p99 c11 -> c21", "us", false, true),
    vs(
        "ping_poll_p50_us",
        "ping RTT p50, vxmesh always polling (--busy-poll-us max; kernel, OVS: as above)",
        "us",
        "ping_p50_us",
    ),
    vs(
        "ping_poll_p99_us",
        "ping RTT p99, vxmesh always polling (--busy-poll-us max; kernel, OVS: as above)",
        "us",
        "ping_p99_us",
    ),
    vs(
        "ping_offl_p50_us",
        "ping RTT p50, vxmesh --afxdp-offloads (kernel, OVS: as above)",
        "us",
        "ping_p50_us",
    ),
    vs(
        "ping_offl_p99_us",
        "ping RTT p99, vxmesh --afxdp-offloads (kernel, OVS: as above)",
        "us",
        "ping_p99_us",
    ),
    m(
        "http_ka_rps",
        "HTTP via VIP, keep-alive (wrk -c32)",
        "req/s",
        true,
        true,
    ),
    m(
        "http_ka_p99_us",
        "HTTP via VIP, keep-alive, latency p99",
        "us",
        false,
        true,
    ),
    m(
        "http_close_rps",
        "HTTP via VIP, new connection per request",
        "req/s",
        true,
        true,
    ),
    m(
        "http_close_p99_us",
        "HTTP via VIP, new connection, latency p99",
        "us",
        false,
        true,
    ),
    // Supporting figures.
    m(
        "udp64_tx_pps",
        "UDP 64 B sent by iperf3 (client-counted)",
        "pkt/s",
        true,
        false,
    ),
    m("udp64_loss_pct", "UDP 64 B loss", "%", false, false),
    m(
        "udp64_cpu_cores",
        "CPU busy during the UDP test (whole machine)",
        "cores",
        false,
        false,
    ),
    m(
        "udp64_window_rx_pps",
        "UDP 64 B frames into c21's eth0 (steady window)",
        "pkt/s",
        true,
        false,
    ),
    m(
        "udp64_cpu_s_per_mpkt_excl_other",
        "CPU per million UDP packets, other sessions' CPU subtracted",
        "CPU s/Mpkt",
        false,
        false,
    ),
    m(
        "udp64_cpu_s_per_mpkt_iperf",
        "CPU per million UDP packets, whole iperf3 run / iperf3-received",
        "CPU s/Mpkt",
        false,
        false,
    ),
    m(
        "http_ka_p50_us",
        "HTTP via VIP, keep-alive, latency p50",
        "us",
        false,
        false,
    ),
    m(
        "http_close_p50_us",
        "HTTP via VIP, new connection, latency p50",
        "us",
        false,
        false,
    ),
    m(
        "http_ka_errors",
        "HTTP keep-alive: socket errors + non-2xx",
        "count",
        false,
        false,
    ),
    m(
        "http_close_errors",
        "HTTP new connection: socket errors + non-2xx",
        "count",
        false,
        false,
    ),
    m("ping_replies", "ping replies", "count", true, false),
];

/// Median (mean of the middle two for an even count), min, max.
pub fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if !n.is_multiple_of(2) {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((med, s[0], s[n - 1]))
}

/// A number for people: thousands separated, about three significant digits.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        let r = v.round() as i64;
        let digits = r.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if r < 0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One side's values of a metric and their (median, min, max).
pub type Vals = (Vec<f64>, Option<(f64, f64, f64)>);

/// One metric compared.
pub struct Row<'a> {
    /// The metric.
    pub metric: &'a Metric,
    /// vxmesh: values, (median, min, max).
    pub vx: Vals,
    /// kernel.
    pub k: Vals,
    /// OVS userspace.
    pub ovs: Vals,
    /// The wire (the floor; only the pair tests).
    pub wire: Vals,
}

impl Row<'_> {
    /// The values of side `s`.
    pub fn of(&self, s: Side) -> &Vals {
        match s {
            Side::Vxmesh => &self.vx,
            Side::Kernel => &self.k,
            Side::Ovs => &self.ovs,
            Side::Wire => &self.wire,
        }
    }

    /// vxmesh median / `base`'s median, and its spread (vx min / base max, vx max / base min).
    pub fn ratio(&self, base: Side) -> Option<(f64, f64, f64)> {
        self.ratio_of(Side::Vxmesh, base)
    }

    /// `side`'s median / `base`'s median, and its spread (side min / base max, side max /
    /// base min).
    pub fn ratio_of(&self, side: Side, base: Side) -> Option<(f64, f64, f64)> {
        let (vm, vlo, vhi) = self.of(side).1?;
        let (km, klo, khi) = self.of(base).1?;
        if km == 0.0 || klo == 0.0 || khi == 0.0 {
            return None;
        }
        Some((vm / km, vlo / khi, vhi / klo))
    }

    /// "better"/"worse"/"same" for vxmesh against `base`, and by what factor (>= 1).
    pub fn verdict(&self, base: Side) -> Option<(&'static str, f64)> {
        let (r, ..) = self.ratio(base)?;
        if r <= 0.0 || !r.is_finite() {
            return None;
        }
        let good = if self.metric.higher_better {
            r
        } else {
            1.0 / r
        };
        Some(if (good - 1.0).abs() < 0.005 {
            ("same", 1.0)
        } else if good > 1.0 {
            ("better", good)
        } else {
            ("worse", 1.0 / good)
        })
    }
}

/// The rows for `samples` (side, values of one run).
pub fn rows<'a>(samples: &[(Side, BTreeMap<String, f64>)], metrics: &[&'a Metric]) -> Vec<Row<'a>> {
    metrics
        .iter()
        .map(|&metric| {
            let vals = |side: Side, key: &str| -> Vec<f64> {
                samples
                    .iter()
                    .filter(|(s, _)| *s == side)
                    .filter_map(|(_, v)| v.get(key).copied())
                    .filter(|x| x.is_finite())
                    .collect()
            };
            let v = vals(Side::Vxmesh, metric.key);
            let base = metric.kernel_key.unwrap_or(metric.key);
            let k = vals(Side::Kernel, base);
            let o = vals(Side::Ovs, base);
            // The wire only for figures of its own (not for vxmesh's extra modes).
            let w = match metric.kernel_key {
                None => vals(Side::Wire, metric.key),
                Some(_) => Vec::new(),
            };
            let (sv, sk, so, sw) = (stats(&v), stats(&k), stats(&o), stats(&w));
            Row {
                metric,
                vx: (v, sv),
                k: (k, sk),
                ovs: (o, so),
                wire: (w, sw),
            }
        })
        .collect()
}

fn cell(s: Option<(f64, f64, f64)>, n: usize) -> String {
    match s {
        None => "—".into(),
        Some((med, lo, hi)) if n > 1 => {
            format!("{} ({}–{})", fmt_num(med), fmt_num(lo), fmt_num(hi))
        }
        Some((med, ..)) => fmt_num(med),
    }
}

/// The "vxmesh / base" cell: the ratio, its spread (with more than one run) and the verdict.
fn ratio_cell(r: &Row, base: Side) -> String {
    let ratio = match r.ratio(base) {
        Some((m, lo, hi)) if r.vx.0.len() > 1 || r.of(base).0.len() > 1 => {
            format!("{:.2} ({:.2}–{:.2})", m, lo, hi)
        }
        Some((m, ..)) => format!("{m:.2}"),
        None => return "—".into(),
    };
    match r.verdict(base) {
        Some(("same", _)) => format!("{ratio}: the same"),
        Some((w, f)) => format!("{ratio}: {f:.2}× {w}"),
        None => ratio,
    }
}

/// The markdown table of `rows` (headline or supporting): the three sides' medians (min–max)
/// and vxmesh's ratio to the kernel and to OVS, with the verdict ("vxmesh is N× better/worse").
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s += "| metric | unit | better | vxmesh median (min–max) | kernel median (min–max) | OVS userspace median (min–max) | vxmesh / kernel: vxmesh is | vxmesh / OVS: vxmesh is |\n";
    s += "|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.metric.label,
            r.metric.unit,
            if r.metric.higher_better {
                "higher"
            } else {
                "lower"
            },
            cell(r.vx.1, r.vx.0.len()),
            cell(r.k.1, r.k.0.len()),
            cell(r.ovs.1, r.ovs.0.len()),
            ratio_cell(r, Side::Kernel),
            ratio_cell(r, Side::Ovs),
        );
    }
    s
}

/// The floor's table: for each of `rows` the wire measured, the wire's median (min–max) and
/// each side's median over it ("N× the wire": what the dataplane adds, in the direction where
/// more is worse: a time or CPU over the wire's, the wire's throughput over the side's).
pub fn wire_table(rows: &[Row]) -> String {
    let mut s = String::new();
    s += "| metric | unit | wire median (min–max) | kernel: × the wire | vxmesh: × the wire | OVS userspace: × the wire |\n";
    s += "|---|---|---|---|---|---|\n";
    for r in rows
        .iter()
        .filter(|r| r.wire.1.is_some() && r.metric.unit != "count")
    {
        let times = |side: Side| match r.ratio_of(side, Side::Wire) {
            Some((m, ..)) if m > 0.0 && m.is_finite() => {
                let f = if r.metric.higher_better { 1.0 / m } else { m };
                format!("{f:.2}")
            }
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.metric.label,
            r.metric.unit,
            cell(r.wire.1, r.wire.0.len()),
            times(Side::Kernel),
            times(Side::Vxmesh),
            times(Side::Ovs),
        );
    }
    s
}

/// The figures of `rows` for the JSON: the keys of the two-sided version (`kernel`,
/// `ratio_vxmesh_over_kernel`, `ratio_min`/`ratio_max`, `vxmesh_is`, `factor`: against the
/// kernel) plus the same against OVS (`ovs`, `ratio_vxmesh_over_ovs`, ..., `factor_vs_ovs`).
pub fn rows_json(rows: &[Row]) -> Value {
    let side = |v: &(Vec<f64>, Option<(f64, f64, f64)>)| match v.1 {
        Some((med, lo, hi)) => json!({"median": med, "min": lo, "max": hi, "values": v.0}),
        None => Value::Null,
    };
    Value::Array(
        rows.iter()
            .map(|r| {
                let ratio3 = |base| {
                    r.ratio(base)
                        .map_or((Value::Null, Value::Null, Value::Null), |(a, b, c)| {
                            (json!(a), json!(b), json!(c))
                        })
                };
                let verdict = |base| {
                    r.verdict(base)
                        .map_or((Value::Null, Value::Null), |(v, f)| (json!(v), json!(f)))
                };
                let (ratio, rlo, rhi) = ratio3(Side::Kernel);
                let (verdict_k, factor) = verdict(Side::Kernel);
                let (ratio_o, rlo_o, rhi_o) = ratio3(Side::Ovs);
                let (verdict_o, factor_o) = verdict(Side::Ovs);
                let over_wire = |side| {
                    r.ratio_of(side, Side::Wire)
                        .map_or(Value::Null, |(m, ..)| json!(m))
                };
                json!({
                    "key": r.metric.key,
                    "label": r.metric.label,
                    "unit": r.metric.unit,
                    "better": if r.metric.higher_better { "higher" } else { "lower" },
                    "headline": r.metric.headline,
                    "vxmesh": side(&r.vx),
                    "kernel": side(&r.k),
                    "ovs": side(&r.ovs),
                    "ratio_vxmesh_over_kernel": ratio,
                    "ratio_min": rlo,
                    "ratio_max": rhi,
                    "vxmesh_is": verdict_k,
                    "factor": factor,
                    "ratio_vxmesh_over_ovs": ratio_o,
                    "ratio_ovs_min": rlo_o,
                    "ratio_ovs_max": rhi_o,
                    "vxmesh_is_vs_ovs": verdict_o,
                    "factor_vs_ovs": factor_o,
                    "wire": side(&r.wire),
                    "ratio_kernel_over_wire": over_wire(Side::Kernel),
                    "ratio_vxmesh_over_wire": over_wire(Side::Vxmesh),
                    "ratio_ovs_over_wire": over_wire(Side::Ovs),
                })
            })
            .collect(),
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart of the vxmesh / `base` ratios on a log2 axis centred on 1: green
/// where vxmesh is better, red where it is worse, whiskers for the spread (vxmesh min / base
/// max .. vxmesh max / base min). Written by hand: no plotting dependency.
pub fn svg(rows: &[Row], base: Side, title: &str, subtitle: &str) -> String {
    let bn = base.name();
    let rows: Vec<&Row> = rows.iter().filter(|r| r.ratio(base).is_some()).collect();
    // Axis: 2^-k .. 2^k, k the smallest that holds every ratio and whisker (2..=7).
    let mut k = 2i32;
    for r in &rows {
        let (a, b, c) = r.ratio(base).expect("filtered");
        for x in [a, b, c] {
            if x > 0.0 && x.is_finite() {
                k = k.max(x.log2().abs().ceil() as i32);
            }
        }
    }
    let k = k.min(7);
    let (label_w, chart_w, right_w) = (330.0, 480.0, 150.0);
    let (top, row_h, bottom) = (78.0, 34.0, 70.0);
    let width = label_w + chart_w + right_w;
    let height = top + row_h * rows.len() as f64 + bottom;
    let x_of = |r: f64| {
        let l = r.max(f64::MIN_POSITIVE).log2().clamp(-(k as f64), k as f64);
        label_w + chart_w * (l + k as f64) / (2.0 * k as f64)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        12.0,
        xml(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="12" y="44" fill="#555555">{}</text>"##,
        xml(subtitle)
    );
    let _ = writeln!(
        s,
        r##"<text x="12" y="62" fill="#555555">bar: vxmesh median / {bn} median (log scale); whisker: vxmesh min / {bn} max .. vxmesh max / {bn} min</text>"##
    );
    let y_axis_bottom = top + row_h * rows.len() as f64;
    // Grid lines and tick labels at powers of two.
    for e in -k..=k {
        let r = 2f64.powi(e);
        let x = x_of(r);
        let (stroke, w) = if e == 0 {
            ("#000000", 1.5)
        } else {
            ("#dddddd", 1.0)
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{y_axis_bottom:.1}" stroke="{stroke}" stroke-width="{w}"/>"#
        );
        let lbl = if e >= 0 {
            format!("{}", 1u32 << e)
        } else {
            format!("1/{}", 1u32 << (-e))
        };
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{lbl}</text>"#,
            y_axis_bottom + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">vxmesh / {bn}</text>"#,
        label_w + chart_w / 2.0,
        y_axis_bottom + 34.0
    );
    for (i, r) in rows.iter().enumerate() {
        let (ratio, lo, hi) = r.ratio(base).expect("filtered");
        let y = top + row_h * i as f64;
        let mid = y + row_h / 2.0;
        let (verdict, factor) = r.verdict(base).unwrap_or(("same", 1.0));
        let color = match verdict {
            "better" => "#2e8b57",
            "worse" => "#c0392b",
            _ => "#7f8c8d",
        };
        let (x0, x1) = (x_of(1.0), x_of(ratio));
        let (bx, bw) = if x1 >= x0 {
            (x0, x1 - x0)
        } else {
            (x1, x0 - x1)
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 10.0,
            mid - 2.0,
            xml(r.metric.label)
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10" fill="#666666">{} is better</text>"##,
            label_w - 10.0,
            mid + 11.0,
            if r.metric.higher_better {
                "higher"
            } else {
                "lower"
            }
        );
        let _ = writeln!(
            s,
            r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.85"/>"#,
            y + 7.0,
            bw.max(1.0),
            row_h - 14.0
        );
        let (wl, wh) = (x_of(lo), x_of(hi));
        if (wh - wl).abs() > 0.5 {
            let _ = writeln!(
                s,
                r##"<line x1="{wl:.1}" y1="{mid:.1}" x2="{wh:.1}" y2="{mid:.1}" stroke="#222222" stroke-width="1.2"/>"##
            );
            for wx in [wl, wh] {
                let _ = writeln!(
                    s,
                    r##"<line x1="{wx:.1}" y1="{:.1}" x2="{wx:.1}" y2="{:.1}" stroke="#222222" stroke-width="1.2"/>"##,
                    mid - 5.0,
                    mid + 5.0
                );
            }
        }
        let words = match verdict {
            "same" => "same".to_string(),
            w => format!("{factor:.2}× {w}"),
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{color}">{:.2} ({words})</text>"#,
            label_w + chart_w + 8.0,
            mid + 4.0,
            ratio
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="12" y="{:.1}" fill="#555555"><tspan fill="#2e8b57">■</tspan> vxmesh better   <tspan fill="#c0392b">■</tspan> vxmesh worse</text>"##,
        height - 12.0
    );
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(fmt_num(1234567.4), "1,234,567");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(0.1234), "0.123");
    }

    #[test]
    fn a_vxmesh_only_mode_is_compared_with_the_kernel_figure_it_names() {
        let mut a = BTreeMap::new();
        a.insert("ping_p50_us".to_string(), 20.0);
        a.insert("ping_poll_p50_us".to_string(), 9.0);
        let mut b = BTreeMap::new();
        b.insert("ping_p50_us".to_string(), 5.0);
        let samples = vec![(Side::Vxmesh, a), (Side::Kernel, b)];
        let all: Vec<&Metric> = METRICS.iter().collect();
        let rs = rows(&samples, &all);
        let poll = rs
            .iter()
            .find(|r| r.metric.key == "ping_poll_p50_us")
            .unwrap();
        assert_eq!(poll.ratio(Side::Kernel).unwrap().0, 9.0 / 5.0);
        let plain = rs.iter().find(|r| r.metric.key == "ping_p50_us").unwrap();
        assert_eq!(plain.ratio(Side::Kernel).unwrap().0, 4.0);
        // No OVS runs: no OVS ratio, and the table says so with a dash.
        assert_eq!(plain.ratio(Side::Ovs), None);
        assert!(table(&rs).lines().nth(2).unwrap().ends_with("| — |"));
    }

    #[test]
    fn verdicts_follow_direction() {
        let mut a = BTreeMap::new();
        a.insert("tcp_gbps".to_string(), 2.0);
        a.insert("ping_p50_us".to_string(), 20.0);
        let mut b = BTreeMap::new();
        b.insert("tcp_gbps".to_string(), 4.0);
        b.insert("ping_p50_us".to_string(), 10.0);
        let mut o = BTreeMap::new();
        o.insert("tcp_gbps".to_string(), 1.0);
        o.insert("ping_p50_us".to_string(), 40.0);
        let samples = vec![(Side::Vxmesh, a), (Side::Kernel, b), (Side::Ovs, o)];
        let all: Vec<&Metric> = METRICS.iter().collect();
        let rs = rows(&samples, &all);
        let tcp = rs.iter().find(|r| r.metric.key == "tcp_gbps").unwrap();
        assert_eq!(tcp.verdict(Side::Kernel), Some(("worse", 2.0)));
        assert_eq!(tcp.verdict(Side::Ovs), Some(("better", 2.0)));
        let ping = rs.iter().find(|r| r.metric.key == "ping_p50_us").unwrap();
        assert_eq!(ping.ratio(Side::Kernel).unwrap().0, 2.0);
        assert_eq!(ping.verdict(Side::Kernel), Some(("worse", 2.0)));
        assert_eq!(ping.verdict(Side::Ovs), Some(("better", 2.0)));
        let t = table(&rs);
        assert!(t.contains("| 2.00 | 4.00 | 1.00 | 0.50: 2.00× worse | 2.00: 2.00× better |"));
        let j = rows_json(&rs);
        assert_eq!(j[0]["ratio_vxmesh_over_kernel"], json!(0.5));
        assert_eq!(j[0]["ratio_vxmesh_over_ovs"], json!(2.0));
        assert_eq!(j[0]["vxmesh_is_vs_ovs"], json!("better"));
        for base in [Side::Kernel, Side::Ovs] {
            let svg = svg(&rs, base, "t", "s");
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        }
    }

    #[test]
    fn the_wire_table_says_how_many_times_the_floor_each_side_costs() {
        let run = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let samples = vec![
            (
                Side::Vxmesh,
                run(&[
                    ("tcp_gbps", 2.0),
                    ("ping_p50_us", 30.0),
                    ("ping_poll_p50_us", 20.0),
                ]),
            ),
            (
                Side::Kernel,
                run(&[
                    ("tcp_gbps", 8.0),
                    ("ping_p50_us", 20.0),
                    ("tcp_tap_gbps", 7.0),
                ]),
            ),
            (
                Side::Wire,
                run(&[("tcp_gbps", 10.0), ("ping_p50_us", 10.0)]),
            ),
        ];
        let all: Vec<&Metric> = METRICS.iter().collect();
        let rs = rows(&samples, &all);
        let t = wire_table(&rs);
        // Throughput: the wire's over the side's; time: the side's over the wire's.
        assert!(t.contains("| Gbit/s | 10.0 | 1.25 | 5.00 | — |"), "{t}");
        assert!(t.contains("| us | 10.0 | 2.00 | 3.00 | — |"), "{t}");
        // Only rows the wire measured, and not vxmesh's extra modes.
        assert_eq!(t.lines().count(), 4, "{t}");
        let j = rows_json(&rs);
        assert_eq!(j[0]["ratio_kernel_over_wire"], json!(0.8));
        assert_eq!(j[0]["wire"]["median"], json!(10.0));
        // The wire never enters the vxmesh/kernel ratios.
        assert_eq!(rs[0].ratio(Side::Kernel).unwrap().0, 0.25);
    }
}
