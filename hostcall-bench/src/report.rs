//! What a run measured and how it is shown: the table (`name value unit
//! baseline ratio goal`), the JSON file and the SVG plots beside it. Nothing
//! here touches a GPU, so CI tests it on a canned result.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The JSON layout's version: bump it when a field changes meaning.
pub const SCHEMA: u32 = 1;

/// One run of the bench.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// Quick mode (smaller sizes, fewer points): not the figures to quote.
    pub quick: bool,
    pub machine: Machine,
    pub figures: Vec<Figure>,
    pub curves: Vec<Curve>,
}

/// Where it ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub gpu: String,
    pub driver: String,
    /// `gen5 x16`, as the driver reports the link now.
    pub pcie: String,
    pub cpu: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `git describe` of the source the bench was built from.
    pub commit: String,
    /// SHA-256 of each kernel image the run loaded (PTX and cubin together).
    pub images: Vec<(String, String)>,
}

/// What a figure's ratio (value / baseline) should be.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "ratio")]
pub enum Goal {
    #[serde(rename = "<=")]
    AtMost(f64),
    #[serde(rename = ">=")]
    AtLeast(f64),
}

impl Goal {
    pub fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(g) => ratio <= g,
            Goal::AtLeast(g) => ratio >= g,
        }
    }

    /// How far `ratio` is from the goal, as a factor >= 1 (1: met).
    pub fn shortfall(self, ratio: f64) -> f64 {
        let f = match self {
            Goal::AtMost(g) => ratio / g,
            Goal::AtLeast(g) => g / ratio,
        };
        if f.is_finite() {
            f.max(1.0)
        } else {
            f64::INFINITY
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtMost(g) => write!(f, "<={g}x"),
            Goal::AtLeast(g) => write!(f, ">={g}x"),
        }
    }
}

/// One measured figure beside its baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// What the value is compared with, measured in the same run; `None`
    /// for absolute figures (build times).
    pub baseline_name: Option<String>,
    pub baseline: Option<f64>,
    pub goal: Option<Goal>,
    /// Counts that qualify the figure (`lost=0 torn=0`), free text.
    pub notes: String,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &str) -> Self {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline_name: None,
            baseline: None,
            goal: None,
            notes: String::new(),
        }
    }

    pub fn against(mut self, baseline_name: &str, baseline: f64) -> Self {
        self.baseline_name = Some(baseline_name.into());
        self.baseline = Some(baseline);
        self
    }

    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }

    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }

    /// value / baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.map(|b| self.value / b)
    }

    /// `met`, `MISSED by 3.2x`, or empty when there is no goal.
    pub fn verdict(&self) -> String {
        match (self.goal, self.ratio()) {
            (Some(goal), Some(r)) if goal.met(r) => "met".into(),
            (Some(goal), Some(r)) => format!("MISSED by {:.2}x", goal.shortfall(r)),
            _ => String::new(),
        }
    }
}

/// A series for a plot: `y` of the bench and of its baseline against `x`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// File stem of the plot (`calls_per_s`).
    pub name: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A number in a few significant digits, for the table.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a >= 1e6 {
        format!("{:.3e}", v)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The table, one line per figure: `name value unit baseline ratio goal`.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(
        out,
        "# {} | driver {} | PCIe {} | {} ({} cores) | {} | {}{}",
        m.gpu,
        m.driver,
        m.pcie,
        m.cpu,
        m.cores,
        m.commit,
        results.date,
        if results.quick { " | quick" } else { "" }
    );
    let _ = writeln!(
        out,
        "{:<40} {:>10} {:<8} {:<30} {:>10} {:>8} {:>7}  verdict",
        "name", "value", "unit", "baseline", "", "ratio", "goal"
    );
    for f in &results.figures {
        let (bname, b) = match (&f.baseline_name, f.baseline) {
            (Some(n), Some(b)) => (n.as_str(), num(b)),
            _ => ("-", String::new()),
        };
        let ratio = f.ratio().map_or_else(|| "-".into(), |r| format!("{r:.3}x"));
        let goal = f.goal.map_or_else(|| "-".into(), |g| g.to_string());
        let _ = write!(
            out,
            "{:<40} {:>10} {:<8} {:<30} {:>10} {:>8} {:>7}  {}",
            f.name,
            num(f.value),
            f.unit,
            bname,
            b,
            ratio,
            goal,
            f.verdict()
        );
        if !f.notes.is_empty() {
            let _ = write!(out, "  [{}]", f.notes);
        }
        out.push('\n');
    }
    out
}

/// `NVIDIA H200` -> `h200`: the file-name stem of a GPU.
pub fn gpu_slug(name: &str) -> String {
    let lower = name.to_lowercase();
    let trimmed = lower.trim_start_matches("nvidia").trim();
    let mut slug = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() {
        "gpu".into()
    } else {
        slug
    }
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn utc_date(unix_secs: u64) -> String {
    // Civil from days (H. Hinnant's algorithm), for dates after 1970.
    let z = unix_secs / 86_400 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc_date(secs)
}

/// Write `<dir>/<stem>.json` and a plot per curve (`<stem>-<curve>.svg`)
/// plus the ratio chart (`<stem>-ratios.svg`); returns the paths written.
pub fn write(results: &Results, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    std::fs::write(&json, text + "\n").map_err(|e| format!("{}: {e}", json.display()))?;
    let mut written = vec![json];
    written.extend(plots(results, dir, stem)?);
    Ok(written)
}

pub fn read(path: &Path) -> Result<Results, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let results: Results = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if results.schema != SCHEMA {
        return Err(format!("{}: schema {} (this bench reads {SCHEMA})", path.display(), results.schema));
    }
    Ok(results)
}

/// The SVG plots of `results` into `dir`.
pub fn plots(results: &Results, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for curve in &results.curves {
        let path = dir.join(format!("{stem}-{}.svg", curve.name));
        plot_curve(curve, &path, &results.machine.gpu).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    let rated: Vec<&Figure> = results.figures.iter().filter(|f| f.ratio().is_some_and(|r| r > 0.0)).collect();
    if !rated.is_empty() {
        let path = dir.join(format!("{stem}-ratios.svg"));
        plot_ratios(&rated, &path, &results.machine.gpu).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

const COLORS: [plotters::style::RGBColor; 4] = [
    plotters::style::RGBColor(0x1f, 0x77, 0xb4),
    plotters::style::RGBColor(0xd6, 0x27, 0x28),
    plotters::style::RGBColor(0x2c, 0xa0, 0x2c),
    plotters::style::RGBColor(0x94, 0x67, 0xbd),
];

/// Both series against `x`, log-log.
fn plot_curve(curve: &Curve, path: &Path, gpu: &str) -> PlotResult {
    use plotters::prelude::*;
    let points = || curve.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0 > 0.0 && p.1 > 0.0);
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 || y0 > y1 {
        return Err("no positive points to plot".into());
    }
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} ({gpu})", curve.name), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((x0 / 1.5..x1 * 1.5).log_scale(), (y0 / 2.0..y1 * 2.0).log_scale())?;
    chart.configure_mesh().x_desc(curve.x_label.as_str()).y_desc(curve.y_label.as_str()).draw()?;
    for (i, s) in curve.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// One bar per figure: its ratio to its baseline, with the goal marked.
fn plot_ratios(figures: &[&Figure], path: &Path, gpu: &str) -> PlotResult {
    use plotters::prelude::*;
    let ratios: Vec<f64> = figures.iter().filter_map(|f| f.ratio()).collect();
    let goals = figures.iter().filter_map(|f| match f.goal {
        Some(Goal::AtMost(g) | Goal::AtLeast(g)) => Some(g),
        None => None,
    });
    let lo = ratios.iter().copied().chain(goals.clone()).fold(1.0f64, f64::min) / 2.0;
    let hi = ratios.iter().copied().chain(goals).fold(1.0f64, f64::max) * 2.0;
    let n = figures.len();
    let root = SVGBackend::new(path, (900, 60 + 28 * n as u32 + 60)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("ratio to baseline, same run ({gpu}); | = goal"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(260)
        .build_cartesian_2d((lo..hi).log_scale(), 0..n)?;
    let names: Vec<String> = figures.iter().map(|f| f.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|i| names.get(*i).cloned().unwrap_or_default())
        .x_desc("value / baseline")
        .draw()?;
    for (i, f) in figures.iter().enumerate() {
        let Some(r) = f.ratio() else { continue };
        let color = match f.goal {
            Some(g) if g.met(r) => COLORS[2],
            Some(_) => COLORS[1],
            None => COLORS[0],
        };
        chart.draw_series(std::iter::once(Rectangle::new([(lo, i), (r, i + 1)], color.mix(0.7).filled())))?;
        if let Some(Goal::AtMost(g) | Goal::AtLeast(g)) = f.goal {
            chart.draw_series(std::iter::once(PathElement::new(vec![(g, i), (g, i + 1)], BLACK.stroke_width(3))))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_796_169_600), "2026-12-02");
    }

    #[test]
    fn gpu_names_become_file_stems() {
        assert_eq!(gpu_slug("NVIDIA H200"), "h200");
        assert_eq!(gpu_slug("NVIDIA H100 80GB HBM3"), "h100-80gb-hbm3");
        assert_eq!(gpu_slug(""), "gpu");
    }

    #[test]
    fn goals_say_whether_and_by_how_much() {
        let f = Figure::new("null_call_us", 9.0, "us").against("pingpong_us", 2.0).goal(Goal::AtMost(1.25));
        assert_eq!(f.ratio(), Some(4.5));
        assert_eq!(f.verdict(), "MISSED by 3.60x");
        let g = Figure::new("x", 10.0, "/s").against("y", 1.0).goal(Goal::AtLeast(5.0));
        assert_eq!(g.verdict(), "met");
        assert_eq!(Figure::new("build_s", 1.0, "s").verdict(), "");
        assert_eq!(Goal::AtLeast(5.0).shortfall(0.0), f64::INFINITY);
    }
}
