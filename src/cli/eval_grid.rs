//! `streamrec eval --grid`: every combination of some settings' values, each evaluated on a
//! fresh engine, so a default comes with the evidence of its neighbours.

use anyhow::{bail, Context};

use crate::eval::{EvalReport, MethodReport};

/// One `--grid` axis: a setting and the values it takes.
#[derive(Debug, PartialEq)]
struct Axis {
    key: String,
    values: Vec<String>,
}

impl Axis {
    fn parse(text: &str) -> anyhow::Result<Axis> {
        let Some((key, values)) = text.split_once('=') else {
            bail!("--grid {text:?}: expected section.key=v1,v2,...");
        };
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
        if values.iter().any(String::is_empty) {
            bail!("--grid {text:?}: a value is empty");
        }
        Ok(Axis {
            key: key.trim().to_owned(),
            values,
        })
    }
}

/// Every combination of the axes' values as `key=value` assignments, the last axis fastest.
fn points(axes: &[Axis]) -> Vec<Vec<String>> {
    axes.iter().fold(vec![Vec::new()], |points, axis| {
        let mut extended = Vec::with_capacity(points.len() * axis.values.len());
        for point in &points {
            for value in &axis.values {
                let mut point = point.clone();
                point.push(format!("{}={value}", axis.key));
                extended.push(point);
            }
        }
        extended
    })
}

/// Evaluates each combination with `evaluate` (given its assignments) and prints a row per
/// combination and method, or one JSON object.
pub(super) fn run(
    axes: &[String],
    json: bool,
    mut evaluate: impl FnMut(&[String]) -> anyhow::Result<EvalReport>,
) -> anyhow::Result<()> {
    let axes: Vec<Axis> = axes
        .iter()
        .map(|a| Axis::parse(a))
        .collect::<Result<_, _>>()?;
    let points = points(&axes);
    let width = points.iter().map(|p| p.join(" ").len()).max().unwrap_or(0);
    let mut results = Vec::new();
    for (index, point) in points.iter().enumerate() {
        let report = evaluate(point).with_context(|| format!("--grid {}", point.join(" ")))?;
        if json {
            results.push(serde_json::json!({ "settings": point, "report": report }));
            continue;
        }
        if index == 0 {
            println!("{}", header(&report, width));
        }
        print!("{}", rows(point, &report, width));
    }
    if json {
        println!("{}", serde_json::json!({ "grid": results }));
    }
    Ok(())
}

fn header(report: &EvalReport, width: usize) -> String {
    let n = report.top_n;
    format!(
        "{:<width$} {:<20} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "settings",
        "method",
        format!("HR@{n}"),
        format!("MRR@{n}"),
        "coverage",
        "1st half",
        "2nd half",
        "events/s"
    )
}

fn rows(point: &[String], report: &EvalReport, width: usize) -> String {
    let settings = point.join(" ");
    let row = |m: &MethodReport| {
        let [first, last] = m.halves_hr_at_n;
        format!(
            "{settings:<width$} {:<20} {:>8.4} {:>8.4} {:>9.3} {:>9.4} {:>9.4} {:>10.0}\n",
            m.method, m.hr_at_n, m.mrr_at_n, m.coverage, first, last, m.events_per_s
        )
    };
    report.methods.iter().map(row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_once_the_last_axis_fastest() {
        let axes = [
            Axis::parse("a.x=1,2").unwrap(),
            Axis::parse("b.y = 3, 4 ,5").unwrap(),
        ];
        let points = points(&axes);
        assert_eq!(points.len(), 6);
        assert_eq!(points[0], ["a.x=1", "b.y=3"]);
        assert_eq!(points[1], ["a.x=1", "b.y=4"]);
        assert_eq!(points[5], ["a.x=2", "b.y=5"]);
    }

    #[test]
    fn an_axis_without_values_is_refused() {
        assert!(Axis::parse("a.x").is_err());
        assert!(Axis::parse("a.x=1,,2").is_err());
    }
}
