//! PNG plots of an evaluation, drawn with `plotters` on its bitmap backend.
//!
//! Text: plotters' own text needs a font (system fonts through font-kit, or a TTF registered
//! for ab_glyph). facegate ships no font file and must draw on a fresh board without fonts, so
//! [`Glyphs`] wraps the bitmap backend and draws every label with the public-domain 8×8 bitmap
//! font of `font8x8` (already used for the face labels in `annotate.rs`), scaled by whole
//! pixels. plotters is built without any font feature.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use font8x8::{UnicodeFonts, BASIC_FONTS};
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind, FontTransform};

/// The bitmap backend with text drawn from the 8×8 bitmap font.
pub struct Glyphs<'a> {
    inner: BitMapBackend<'a>,
}

impl Glyphs<'_> {
    /// Whole-pixel scale of the 8×8 glyphs for a font size in pixels.
    fn scale(size: f64) -> i32 {
        ((size / 10.0).round() as i32).clamp(1, 4)
    }
}

type BackendError<'a> = DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

impl<'a> DrawingBackend for Glyphs<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), BackendError<'a>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), BackendError<'a>> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), BackendError<'a>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, style: &S) -> Result<(), BackendError<'a>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), BackendError<'a>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, path: I, style: &S) -> Result<(), BackendError<'a>> {
        self.inner.draw_path(path, style)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, vert: I, style: &S) -> Result<(), BackendError<'a>> {
        self.inner.fill_polygon(vert, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(&mut self, center: BackendCoord, radius: u32, style: &S, fill: bool) -> Result<(), BackendError<'a>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn estimate_text_size<T: BackendTextStyle>(&self, text: &str, style: &T) -> Result<(u32, u32), BackendError<'a>> {
        let s = Glyphs::scale(style.size()) as u32;
        Ok((8 * s * text.chars().count() as u32, 8 * s))
    }

    fn draw_text<T: BackendTextStyle>(&mut self, text: &str, style: &T, pos: BackendCoord) -> Result<(), BackendError<'a>> {
        let colour = style.color();
        if colour.alpha == 0.0 {
            return Ok(());
        }
        let s = Glyphs::scale(style.size());
        let (w, h) = (8 * s * text.chars().count() as i32, 8 * s);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let transform = style.transform();
        let (cw, ch) = self.get_size();
        for (i, c) in text.chars().enumerate() {
            let glyph = BASIC_FONTS.get(c).unwrap_or(BASIC_FONTS.get('?').unwrap_or([0; 8]));
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    for (sy, sx) in (0..s).flat_map(|a| (0..s).map(move |b| (a, b))) {
                        let x = dx + (i as i32 * 8 + col) * s + sx;
                        let y = dy + row as i32 * s + sy;
                        let (x, y) = match transform {
                            FontTransform::None => (x, y),
                            ref t => t.transform(x, y),
                        };
                        let (x, y) = (pos.0 + x, pos.1 + y);
                        if x >= 0 && y >= 0 && x < cw as i32 && y < ch as i32 {
                            self.inner.draw_pixel((x, y), colour)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 600;

/// The chart every plot starts from: its title, margin and axis label areas.
fn frame<'a, 'b, DB: DrawingBackend>(root: &'a DrawingArea<DB, plotters::coord::Shift>, title: &str) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, 18).margin(12).x_label_area_size(44).y_label_area_size(56);
    b
}

/// The series legend, top left.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 10))
        .draw()
        .map_err(err)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Draws with `draw` onto a white canvas and writes it to `path` as PNG.
fn render(path: &Path, draw: impl FnOnce(DrawingArea<Glyphs<'_>, plotters::coord::Shift>) -> Result<()>) -> Result<()> {
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let backend = Glyphs { inner: BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)) };
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(root.clone())?;
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, buf).context("plot buffer size")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

const GENUINE: RGBColor = RGBColor(0, 110, 200);
const IMPOSTOR: RGBColor = RGBColor(220, 60, 30);
const MARK: RGBColor = RGBColor(40, 150, 40);

/// A rate clamped into a log axis's range.
fn log_clamp(v: f64, lo: f64) -> f64 {
    v.max(lo).min(1.0)
}

/// A rate curve on a log x axis from `lo` (a decade below the smallest nonzero x, at least
/// `min_lo`) to 1, with the marked operating points (label, x, y).
fn log_curve(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    curve: &[(f64, f64)],
    marks: &[(String, f64, f64)],
    min_lo: f64,
) -> Result<()> {
    let lo = floor_decade(curve.iter().map(|p| p.0).filter(|&f| f > 0.0).fold(1.0, f64::min)).max(min_lo);
    render(path, |root| {
        let mut chart = frame(&root, title)
            .build_cartesian_2d((lo..1.0).log_scale(), 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .label_style(("sans-serif", 10))
            .axis_desc_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(curve.iter().map(|&(x, y)| (log_clamp(x, lo), y)), GENUINE.stroke_width(2)))
            .map_err(err)?;
        marks_on(&mut chart, marks, lo)
    })
}

/// ROC: TAR against FAR on a log axis, with the marked operating points (label, FAR, TAR).
pub fn roc(path: &Path, title: &str, curve: &[(f64, f64)], marks: &[(String, f64, f64)]) -> Result<()> {
    let axes = ("false accept rate (impostor pairs accepted)", "true accept rate");
    log_curve(path, title, axes, curve, marks, 1e-6)
}

fn marks_on<DB: DrawingBackend, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    marks: &[(String, f64, f64)],
    lo: f64,
) -> Result<()> {
    for (label, x, y) in marks {
        let at = (log_clamp(*x, lo), *y);
        chart.draw_series(std::iter::once(Circle::new(at, 4, MARK.filled()))).map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(std::iter::once(Text::new(label.clone(), at, ("sans-serif", 10).into_font().color(&BLACK))))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    Ok(())
}

fn floor_decade(v: f64) -> f64 {
    10f64.powf(v.log10().floor())
}

/// DET: false reject rate against false accept rate, both on log axes.
pub fn det(path: &Path, title: &str, curve: &[(f64, f64)], marks: &[(String, f64, f64)]) -> Result<()> {
    det_with_axes(path, title, ("false accept rate", "false reject rate"), curve, marks)
}

/// A DET with other names for its axes (x, y): APCER and BPCER for presentation attacks.
pub fn det_with_axes(path: &Path, title: &str, axes: (&str, &str), curve: &[(f64, f64)], marks: &[(String, f64, f64)]) -> Result<()> {
    // At most 0.1: a curve with no point above zero on both axes still gets a range.
    let lo_x = floor_decade(curve.iter().map(|p| p.0).filter(|&f| f > 0.0).fold(1.0, f64::min)).clamp(1e-6, 0.1);
    let lo_y = floor_decade(curve.iter().map(|p| p.1).filter(|&f| f > 0.0).fold(1.0, f64::min)).clamp(1e-4, 0.1);
    render(path, |root| {
        let mut chart = frame(&root, title)
            .build_cartesian_2d((lo_x..1.0).log_scale(), (lo_y..1.0).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style(("sans-serif", 10))
            .axis_desc_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                curve.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0).map(|&(f, r)| (log_clamp(f, lo_x), log_clamp(r, lo_y))),
                IMPOSTOR.stroke_width(2),
            ))
            .map_err(err)?;
        for (label, x, y) in marks {
            let at = (log_clamp(*x, lo_x), log_clamp(*y, lo_y));
            chart.draw_series(std::iter::once(Circle::new(at, 4, MARK.filled()))).map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(label.clone(), at, ("sans-serif", 10).into_font().color(&BLACK))))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Histograms (as fractions of each set, 0.02 wide bins over [-0.5, 1]) of genuine and
/// impostor similarities, with vertical lines at the marked thresholds.
pub fn histogram(path: &Path, title: &str, genuine: &[f32], impostor: &[f32], thresholds: &[(String, f32)]) -> Result<()> {
    let scale = HistScale { lo: -0.5, x_desc: "cosine similarity", y_desc: "fraction of pairs per 0.02 bin", names: ["genuine", "impostor"] };
    histogram_on(path, title, &scale, genuine, impostor, thresholds)
}

/// The score axis of a [`histogram_on`] and the names of its two sets.
pub struct HistScale<'a> {
    /// The axis runs from `lo` to 1 in 0.02 wide bins.
    pub lo: f64,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// The accepted set (drawn blue) and the rejected one (red).
    pub names: [&'a str; 2],
}

/// Histograms of two sets of scores on `scale`, with vertical lines at the marked thresholds.
pub fn histogram_on(path: &Path, title: &str, scale: &HistScale<'_>, genuine: &[f32], impostor: &[f32], thresholds: &[(String, f32)]) -> Result<()> {
    const BIN: f64 = 0.02;
    let lo = scale.lo.min(1.0 - BIN);
    let bins = ((1.0 - lo) / BIN).round() as usize;
    let hist = |v: &[f32]| {
        let mut h = vec![0f64; bins];
        let finite: Vec<f32> = v.iter().copied().filter(|s| s.is_finite()).collect();
        for s in &finite {
            let i = ((*s as f64 - lo) / BIN).floor().clamp(0.0, (bins - 1) as f64) as usize;
            h[i] += 1.0;
        }
        let n = finite.len().max(1) as f64;
        h.iter_mut().for_each(|x| *x /= n);
        h
    };
    let (g, i) = (hist(genuine), hist(impostor));
    let top = g.iter().chain(&i).copied().fold(0.0, f64::max) * 1.1 + 1e-9;
    render(path, |root| {
        let mut chart = frame(&root, title)
            .build_cartesian_2d(lo..1.0, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(scale.x_desc)
            .y_desc(scale.y_desc)
            .label_style(("sans-serif", 10))
            .axis_desc_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        for (h, colour, name) in [(&i, IMPOSTOR, scale.names[1]), (&g, GENUINE, scale.names[0])] {
            chart
                .draw_series(h.iter().enumerate().map(|(k, &v)| {
                    let x0 = lo + k as f64 * BIN;
                    Rectangle::new([(x0, 0.0), (x0 + BIN, v)], colour.mix(0.45).filled())
                }))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], colour.filled()));
        }
        for (label, t) in thresholds {
            let t = *t as f64;
            chart.draw_series(LineSeries::new([(t, 0.0), (t, top * 0.95)], MARK.stroke_width(2))).map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(label.clone(), (t, top * 0.97), ("sans-serif", 10).into_font().color(&BLACK))))
                .map_err(err)?;
        }
        legend(&mut chart)
    })
}

/// A rising curve over x = 1..=len (the cumulative match curve).
pub fn cmc(path: &Path, title: &str, rates: &[f64]) -> Result<()> {
    let lo = (rates.iter().copied().fold(1.0, f64::min) - 0.05).clamp(0.0, 0.95);
    render(path, |root| {
        let mut chart = frame(&root, title)
            .build_cartesian_2d(1.0..(rates.len().max(2) as f64), lo..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("rank")
            .y_desc("identification rate")
            .label_style(("sans-serif", 10))
            .axis_desc_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(rates.iter().enumerate().map(|(k, &r)| ((k + 1) as f64, r)), GENUINE.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(rates.iter().enumerate().map(|(k, &r)| Circle::new(((k + 1) as f64, r), 3, GENUINE.filled())))
            .map_err(err)?;
        Ok(())
    })
}

/// Open-set: DIR against FPIR on a log axis, with marked points.
pub fn dir_fpir(path: &Path, title: &str, curve: &[(f64, f64)], marks: &[(String, f64, f64)]) -> Result<()> {
    let axes = ("false positive identification rate (unknown faces named)", "detection and identification rate");
    log_curve(path, title, axes, curve, marks, 1e-5)
}

/// Grouped bars: one group per band, one bar per series (name, value per band).
pub fn bars(path: &Path, title: &str, y_desc: &str, bands: &[String], series: &[(String, Vec<f64>)]) -> Result<()> {
    let colours = [GENUINE, IMPOSTOR, MARK, RGBColor(140, 80, 180)];
    let top = series.iter().flat_map(|s| s.1.iter()).copied().filter(|v| v.is_finite()).fold(0.0, f64::max) * 1.15 + 1e-9;
    let groups = bands.len().max(1);
    let width = 0.8 / series.len().max(1) as f64;
    render(path, |root| {
        let mut chart = frame(&root, title)
            .build_cartesian_2d(0.0..groups as f64, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups * 2 + 1)
            .x_label_formatter(&|v| {
                let k = v - 0.5;
                if (k - k.round()).abs() < 1e-6 && k >= 0.0 && (k.round() as usize) < bands.len() {
                    bands[k.round() as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc("true age band (years)")
            .y_desc(y_desc)
            .label_style(("sans-serif", 10))
            .axis_desc_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        for (j, (name, values)) in series.iter().enumerate() {
            let colour = colours[j % colours.len()];
            chart
                .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(k, &v)| {
                    let x0 = k as f64 + 0.1 + j as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], colour.filled())
                }))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], colour.filled()));
            chart
                .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(k, &v)| {
                    let x = k as f64 + 0.1 + (j as f64 + 0.45) * width;
                    Text::new(format!("{v:.1}"), (x, v + top * 0.01), ("sans-serif", 10).into_font().color(&BLACK).pos(plotters::style::text_anchor::Pos::new(HPos::Center, VPos::Bottom)))
                }))
                .map_err(err)?;
        }
        legend(&mut chart)
    })
}

/// FAR against threshold (log y) from impostor comparisons, with the chosen threshold and its
/// 95% interval.
pub fn far_curve(path: &Path, title: &str, curve: &[(f64, f64)], chosen: (f64, f64), ci: [f64; 2]) -> Result<()> {
    let lo = floor_decade(curve.iter().map(|p| p.1).filter(|&f| f > 0.0).fold(1.0, f64::min)).max(1e-8);
    let x_lo = curve.iter().map(|p| p.0).fold(f64::INFINITY, f64::min).max(-1.0);
    let x_hi = curve.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max).min(1.0) + 0.05;
    render(path, |root| {
        let mut chart = frame(&root, title)
            .build_cartesian_2d(x_lo..x_hi, (lo..1.0).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("threshold (cosine similarity)")
            .y_desc("false accept rate")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style(("sans-serif", 10))
            .axis_desc_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Rectangle::new([(ci[0], lo), (ci[1], 1.0)], MARK.mix(0.2).filled())))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(curve.iter().filter(|p| p.1 > 0.0).map(|&(t, f)| (t, f.max(lo))), IMPOSTOR.stroke_width(2)))
            .map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new((chosen.0, chosen.1.max(lo)), 5, MARK.filled()))).map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.3} (95% CI {:.3}-{:.3})", chosen.0, ci[0], ci[1]),
                (chosen.0, chosen.1.max(lo)),
                ("sans-serif", 10).into_font().color(&BLACK),
            )))
            .map_err(err)?;
        Ok(())
    })
}

/// Thins a curve to at most `max` points (keeping both ends) for plotting.
pub fn thin<T: Copy>(v: &[T], max: usize) -> Vec<T> {
    if v.len() <= max || max < 2 {
        return v.to_vec();
    }
    let step = (v.len() - 1) as f64 / (max - 1) as f64;
    (0..max).map(|i| v[((i as f64 * step).round() as usize).min(v.len() - 1)]).collect()
}
