//! Usage series drawn as inline SVG bar charts (no script, no external image), each with the
//! numbers behind it as a table for screen readers and for anyone who wants the exact counts.

use fluxgate_proto::UsageSeries;

/// Drawing width of a chart, in SVG units (it scales to its container).
const WIDTH: f64 = 720.0;
/// Drawing height of the bars' area.
const HEIGHT: f64 = 160.0;
/// Room under the bars for the axis labels.
const LABELS: f64 = 18.0;

/// One bar.
pub struct Bar {
    /// Left edge.
    pub x: String,
    /// Top edge.
    pub y: String,
    /// Width.
    pub width: String,
    /// Height.
    pub height: String,
    /// The bucket, as the table shows it.
    pub label: String,
    /// The count or quantity.
    pub value: String,
}

/// A chart ready for the `chart` macro.
pub struct BarChart {
    /// A unique id within the page (for `aria-labelledby`).
    pub id: &'static str,
    /// What it shows.
    pub title: String,
    /// The bars, oldest first.
    pub bars: Vec<Bar>,
    /// The total over the chart's span.
    pub total: String,
    /// The largest bar's value (the y axis' top).
    pub peak: String,
    /// The first and last labels, under the axis.
    pub first_label: String,
    /// The last label.
    pub last_label: String,
    /// The SVG's `viewBox`.
    pub view_box: String,
    /// Where the axis line is.
    pub axis_y: String,
    /// Where the labels sit.
    pub label_y: String,
}

fn amount(point: &fluxgate_proto::UsagePoint) -> f64 {
    match (point.amount.count, point.amount.quantity) {
        (Some(count), _) => count as f64,
        (None, Some(quantity)) => quantity,
        (None, None) => 0.0,
    }
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.2}")
    }
}

/// The bucket's start as the chart labels it: `14:00` for minutes and hours, `11-30` for days.
fn label(start: &str, granularity: &str) -> String {
    match granularity {
        "day" => start.get(5..10).unwrap_or(start).to_owned(),
        _ => start.get(11..16).unwrap_or(start).to_owned(),
    }
}

/// A bar chart of a usage series.
pub fn bar_chart(id: &'static str, title: impl Into<String>, series: &UsageSeries) -> BarChart {
    let values: Vec<f64> = series.series.iter().map(amount).collect();
    let peak = values.iter().copied().fold(0.0, f64::max);
    let slot = WIDTH / values.len().max(1) as f64;
    let gap = if slot > 4.0 { 1.0 } else { 0.0 };
    let bars = series
        .series
        .iter()
        .zip(&values)
        .enumerate()
        .map(|(i, (point, value))| {
            let height = if peak > 0.0 {
                (value / peak) * HEIGHT
            } else {
                0.0
            };
            Bar {
                x: format!("{:.2}", i as f64 * slot),
                y: format!("{:.2}", HEIGHT - height),
                width: format!("{:.2}", (slot - gap).max(0.5)),
                height: format!("{height:.2}"),
                label: label(&point.start, &series.granularity),
                value: number(*value),
            }
        })
        .collect::<Vec<_>>();
    let total = values.iter().sum::<f64>();
    BarChart {
        id,
        title: title.into(),
        first_label: bars.first().map(|b| b.label.clone()).unwrap_or_default(),
        last_label: bars.last().map(|b| b.label.clone()).unwrap_or_default(),
        bars,
        total: number(total),
        peak: number(peak),
        view_box: format!("0 0 {WIDTH} {}", HEIGHT + LABELS),
        axis_y: format!("{HEIGHT}"),
        label_y: format!("{}", HEIGHT + LABELS - 4.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxgate_proto::{Amount, UsagePoint};

    fn series(counts: &[u64]) -> UsageSeries {
        UsageSeries {
            org_id: None,
            key_id: None,
            endpoint: None,
            meter: None,
            granularity: "hour".into(),
            from: "2026-11-30T00:00:00Z".into(),
            to: "2026-11-30T03:00:00Z".into(),
            series: counts
                .iter()
                .enumerate()
                .map(|(i, c)| UsagePoint {
                    start: format!("2026-11-30T0{i}:00:00Z"),
                    amount: Amount {
                        count: Some(*c),
                        quantity: None,
                    },
                })
                .collect(),
            total: Amount {
                count: Some(counts.iter().sum()),
                quantity: None,
            },
        }
    }

    #[test]
    fn the_tallest_bar_fills_the_chart_and_empty_series_draw_nothing() {
        let chart = bar_chart("c", "calls", &series(&[0, 5, 10]));
        assert_eq!(chart.bars[2].height, "160.00");
        assert_eq!(chart.bars[1].height, "80.00");
        assert_eq!(chart.bars[0].height, "0.00");
        assert_eq!(chart.total, "15");
        assert_eq!(chart.bars[1].label, "01:00");
        let empty = bar_chart("c", "calls", &series(&[0, 0]));
        assert!(empty.bars.iter().all(|b| b.height == "0.00"));
    }
}
