//! Pictures of attention and of pruning: heatmaps with token labels, grids of heatmaps, and line
//! plots, each as PNG and SVG through plotters. Text is drawn with the DejaVu Sans font built
//! into the program, so pictures look the same on every machine.

use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::error::{InspectError, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform, register_font};

const FONT: &str = "sans-serif";

/// Registers the embedded font once per process.
fn register_embedded_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is a valid TrueType font"));
    });
}

/// A matrix of attention weights, one row per query, with the tokens of both axes.
#[derive(Clone, Debug)]
pub struct Heatmap<'a> {
    /// `rows[i][j]`: weight of query `i` on key `j`, in `[0, 1]`.
    pub rows: &'a [Vec<f32>],
    /// One label per query (row).
    pub query_labels: &'a [String],
    /// One label per key (column).
    pub key_labels: &'a [String],
    /// Caption.
    pub title: String,
}

/// What a picture shows; drawn the same way on the PNG and the SVG backend.
enum Picture<'a> {
    Heatmap(&'a Heatmap<'a>),
    Grid {
        title: &'a str,
        grid: &'a [Vec<Heatmap<'a>>],
    },
    Lines {
        title: &'a str,
        axes: &'a Axes,
        series: &'a [Series],
    },
    Panels {
        title: &'a str,
        panels: &'a [Panel],
    },
}

impl Picture<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        match self {
            Self::Heatmap(map) => draw_heatmap(area, map, true),
            Self::Grid { title, grid } => draw_grid(area, title, grid),
            Self::Lines {
                title,
                axes,
                series,
            } => draw_lines(area, title, axes, series, false),
            Self::Panels { title, panels } => {
                let area = area.titled(title, (FONT, 24)).map_err(plot_error)?;
                let cols = panels.len().clamp(1, 2);
                let rows = panels.len().div_ceil(cols).max(1);
                for (cell, panel) in area.split_evenly((rows, cols)).iter().zip(panels.iter()) {
                    draw_lines(
                        cell,
                        &panel.title,
                        &panel.axes,
                        &panel.series,
                        panel.labelled,
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Writes `stem.png` and `stem.svg` of `size` pixels; returns the two paths.
    fn write(&self, stem: &Path, size: (u32, u32)) -> Result<Vec<PathBuf>> {
        register_embedded_font();
        let png = stem.with_extension("png");
        let svg = stem.with_extension("svg");
        let naming = |path: &Path| {
            let path = path.to_path_buf();
            move |err| match err {
                InspectError::Draw { detail, .. } => InspectError::Draw { path, detail },
                other => other,
            }
        };
        self.draw_on(BitMapBackend::new(&png, size).into_drawing_area())
            .map_err(naming(&png))?;
        self.draw_on(SVGBackend::new(&svg, size).into_drawing_area())
            .map_err(naming(&svg))?;
        Ok(vec![png, svg])
    }

    /// Draws on a white `root` and writes it out.
    fn draw_on<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(plot_error)?;
        self.draw(&root)?;
        root.present().map_err(plot_error)
    }
}

/// A drawing failure; [`Picture::write`] names the file it was drawing.
fn plot_error<E: std::fmt::Debug>(err: E) -> InspectError {
    InspectError::Draw {
        path: PathBuf::new(),
        detail: format!("{err:?}"),
    }
}

/// Pixel layout of one heatmap inside its area.
struct Layout {
    cell: i32,
    left: i32,
    top: i32,
}

impl Layout {
    const TITLE: i32 = 34;

    fn of(map: &Heatmap<'_>, labels: bool) -> Self {
        let longest =
            |labels: &[String]| labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as i32;
        let n = map.rows.len().max(map.key_labels.len()).max(1) as i32;
        let cell = (560 / n).clamp(10, 40);
        if labels {
            Self {
                cell,
                left: 14 + 8 * longest(map.query_labels),
                top: Self::TITLE + 10 + 8 * longest(map.key_labels),
            }
        } else {
            Self {
                cell,
                left: 4,
                top: 22,
            }
        }
    }

    fn size(&self, map: &Heatmap<'_>) -> (u32, u32) {
        let width = self.left + self.cell * map.key_labels.len() as i32 + 20;
        let height = self.top + self.cell * map.rows.len() as i32 + 20;
        (width.max(200) as u32, height.max(120) as u32)
    }
}

/// Draws `map` into `area`: cells coloured by weight (viridis), token labels when `labels`.
fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    map: &Heatmap<'_>,
    labels: bool,
) -> Result<()> {
    let layout = Layout::of(map, labels);
    let title_size = if labels { 18 } else { 12 };
    area.draw(&Text::new(
        map.title.clone(),
        (4, 4),
        (FONT, title_size).into_font().color(&BLACK),
    ))
    .map_err(plot_error)?;
    let Layout { cell, left, top } = layout;
    for (i, row) in map.rows.iter().enumerate() {
        for (j, &weight) in row.iter().enumerate() {
            let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
            let color = ViridisRGB.get_color(weight.clamp(0.0, 1.0));
            area.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                color.filled(),
            ))
            .map_err(plot_error)?;
        }
    }
    if labels {
        let font = (FONT, 13).into_font().color(&BLACK);
        for (i, label) in map.query_labels.iter().enumerate() {
            let style = font.pos(Pos::new(HPos::Right, VPos::Center));
            let y = top + i as i32 * cell + cell / 2;
            area.draw(&Text::new(label.clone(), (left - 6, y), style))
                .map_err(plot_error)?;
        }
        let rotated = (FONT, 13)
            .into_font()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (j, label) in map.key_labels.iter().enumerate() {
            let x = left + j as i32 * cell + cell / 2;
            area.draw(&Text::new(label.clone(), (x, top - 6), rotated.clone()))
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

/// One heatmap with its token labels: writes `stem.png` and `stem.svg`.
pub fn heatmap(stem: &Path, map: &Heatmap<'_>) -> Result<Vec<PathBuf>> {
    let size = Layout::of(map, true).size(map);
    Picture::Heatmap(map).write(stem, size)
}

/// A grid of heatmaps (`grid[row][column]`, e.g. layers × heads) under one title, without
/// token labels: writes `stem.png` and `stem.svg`.
pub fn heatmap_grid(stem: &Path, title: &str, grid: &[Vec<Heatmap<'_>>]) -> Result<Vec<PathBuf>> {
    let n_rows = grid.len().max(1);
    let n_cols = grid.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (cell_w, cell_h) = grid
        .iter()
        .flatten()
        .map(|m| Layout::of(m, false).size(m))
        .fold((200, 120), |(w, h), (mw, mh)| (w.max(mw), h.max(mh)));
    let size = (cell_w * n_cols as u32, 40 + cell_h * n_rows as u32);
    Picture::Grid { title, grid }.write(stem, size)
}

fn draw_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    grid: &[Vec<Heatmap<'_>>],
) -> Result<()> {
    let n_rows = grid.len().max(1);
    let n_cols = grid.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (header, body) = area.split_vertically(40);
    header
        .draw(&Text::new(
            title.to_string(),
            (6, 8),
            (FONT, 20).into_font().color(&BLACK),
        ))
        .map_err(plot_error)?;
    for (cells, maps) in body.split_evenly((n_rows, n_cols)).chunks(n_cols).zip(grid) {
        for (cell, map) in cells.iter().zip(maps) {
            draw_heatmap(cell, map, false)?;
        }
    }
    Ok(())
}

/// One line of a [`line_plot`].
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points, in order.
    pub points: Vec<(f64, f64)>,
}

/// A tick value without float noise: `0.3`, not `0.30000000000000004`.
fn tick(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// The axes of a [`line_plot`].
#[derive(Clone, Debug)]
pub struct Axes {
    /// Caption of the x axis.
    pub x_label: String,
    /// Caption of the y axis.
    pub y_label: String,
    /// Space x by powers of two (for sizes 128, 256, …, 16384).
    pub log2_x: bool,
    /// Top of the y axis; `None` = 1 (accuracies, shares).
    pub y_max: Option<f64>,
}

impl Axes {
    /// Linear axes with y in `[0, 1]`.
    pub fn unit(x_label: &str, y_label: &str) -> Self {
        Self {
            x_label: x_label.into(),
            y_label: y_label.into(),
            log2_x: false,
            y_max: None,
        }
    }
}

/// One chart of a [`panels_plot`].
#[derive(Clone, Debug)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// Its axes.
    pub axes: Axes,
    /// Its lines.
    pub series: Vec<Series>,
    /// Each series drawn as its points alone, its name written beside them (no lines, no
    /// legend): a scatter of named things, such as one point per model.
    pub labelled: bool,
}

/// Several line charts in a grid of two columns under one title: writes `stem.png` and
/// `stem.svg`.
pub fn panels_plot(stem: &Path, title: &str, panels: &[Panel]) -> Result<Vec<PathBuf>> {
    let rows = panels.len().div_ceil(2).max(1) as u32;
    Picture::Panels { title, panels }.write(stem, (1200, 60 + 420 * rows))
}

/// Lines of `y` against `x`: writes `stem.png` and `stem.svg`.
pub fn line_plot(stem: &Path, title: &str, axes: &Axes, series: &[Series]) -> Result<Vec<PathBuf>> {
    Picture::Lines {
        title,
        axes,
        series,
    }
    .write(stem, (800, 500))
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    axes: &Axes,
    series: &[Series],
    labelled: bool,
) -> Result<()> {
    let x = |v: f64| if axes.log2_x { v.log2() } else { v };
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| x(p.0)));
    let x_min = if axes.log2_x {
        xs.clone().fold(f64::INFINITY, f64::min)
    } else {
        0.0
    };
    let x_max = xs.fold(1.0, f64::max);
    let y_max = axes.y_max.unwrap_or(1.0) * 1.02;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    let log2_x = axes.log2_x;
    chart
        .configure_mesh()
        .x_desc(axes.x_label.as_str())
        .y_desc(axes.y_label.as_str())
        .x_label_formatter(&|v| {
            if log2_x {
                format!("{}", 2f64.powf(*v).round())
            } else {
                tick(*v)
            }
        })
        .x_labels(if log2_x {
            (x_max - x_min).round() as usize + 1
        } else {
            10
        })
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(WHITE)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(plot_error)?;
    let colors = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        plotters::style::full_palette::ORANGE,
        BLACK,
    ];
    if labelled {
        for (s, color) in series.iter().zip(colors.iter().cycle()) {
            let color = *color;
            chart
                .draw_series(s.points.iter().map(|&(px, py)| {
                    // The name 6 pixels right of the point and a line above it.
                    EmptyElement::at((x(px), py))
                        + Circle::new((0, 0), 4, color.filled())
                        + Text::new(
                            s.name.clone(),
                            (6, -16),
                            (FONT, 13).into_font().color(&color),
                        )
                }))
                .map_err(plot_error)?;
        }
        return Ok(());
    }
    for (s, color) in series.iter().zip(colors.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|&(px, py)| (x(px), py)),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&(px, py)| Circle::new((x(px), py), 3, color.filled())),
            )
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG and returns its width and height.
    fn png_size(path: &Path) -> (u32, u32) {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let reader = decoder.read_info().expect("a valid PNG");
        let info = reader.info();
        (info.width, info.height)
    }

    #[test]
    fn heatmaps_grids_and_plots_are_written_as_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("tf-plot-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = vec![vec![1.0, 0.0, 0.0], vec![0.25, 0.75, 0.0]];
        let (queries, keys) = (
            vec!["<bos>".to_string(), "Straße".to_string()],
            vec!["3".to_string(), "1".to_string(), "4".to_string()],
        );
        let map = Heatmap {
            rows: &rows,
            query_labels: &queries,
            key_labels: &keys,
            title: "cross layer 0 head 1".into(),
        };
        let written = heatmap(&dir.join("one"), &map).unwrap();
        assert_eq!(written, [dir.join("one.png"), dir.join("one.svg")]);
        let (w, h) = png_size(&written[0]);
        assert!(w >= 200 && h >= 120);
        let svg = std::fs::read_to_string(&written[1]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Straße"));

        let grid = vec![vec![map.clone(), map.clone()], vec![map.clone(), map]];
        let written = heatmap_grid(&dir.join("grid"), "cross-attention", &grid).unwrap();
        assert!(png_size(&written[0]).0 >= 400);

        let series = [Series {
            name: "exact match".into(),
            points: vec![(0.0, 1.0), (1.0, 0.9), (2.0, 0.4)],
        }];
        let axes = Axes::unit("heads removed", "accuracy");
        let written = line_plot(&dir.join("sweep"), "pruning", &axes, &series).unwrap();
        assert_eq!(png_size(&written[0]), (800, 500));
        let log_axes = Axes {
            log2_x: true,
            y_max: Some(2000.0),
            ..Axes::unit("sequence length", "ms")
        };
        let timings = [Series {
            name: "fused".into(),
            points: vec![(128.0, 2.3), (1024.0, 48.5), (16384.0, 1967.0)],
        }];
        line_plot(&dir.join("scaling"), "scaling", &log_axes, &timings).unwrap();
        // A labelled panel writes each series' name beside its point, and no legend.
        let named = |name: &str, x, y| Series {
            name: name.into(),
            points: vec![(x, y)],
        };
        let scatter = Panel {
            title: "BLEU against parameters".into(),
            axes: Axes {
                y_max: Some(45.0),
                ..Axes::unit("parameters (millions)", "BLEU")
            },
            series: vec![named("heads-8", 7.6, 40.1), named("layers-6", 12.3, 38.2)],
            labelled: true,
        };
        let lines = Panel {
            labelled: false,
            ..scatter.clone()
        };
        let svg_of = |name: &str, panel: Panel| {
            let written = panels_plot(&dir.join(name), "sweep", &[panel]).unwrap();
            std::fs::read_to_string(&written[1]).unwrap()
        };
        let (labelled, legend) = (svg_of("scatter", scatter), svg_of("lines", lines));
        assert!(labelled.contains("heads-8") && labelled.contains("layers-6"));
        let polylines = |svg: &str| svg.matches("<polyline").count();
        assert!(
            polylines(&labelled) + 4 <= polylines(&legend),
            "no line and no legend entry per series: {} against {}",
            polylines(&labelled),
            polylines(&legend)
        );
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(2000.0), "2000");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
