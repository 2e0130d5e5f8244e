// render_metrics and plot_run (plot.h): three panels drawn into a palette
// image with the built-in font, encoded by png_writer.
#include "runtime/observe/plot.h"

#include "runtime/observe/bitmap_font.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>

namespace llamart::observe {

namespace {

namespace fs = std::filesystem;

enum Colour : uint8_t { kWhite, kBlack, kGrid, kTrain, kVal, kLr, kGradNorm, kSkip, kRollback };
const std::vector<Rgb> kPalette = {
    {255, 255, 255}, {0, 0, 0},      {225, 225, 225}, {31, 119, 180}, {255, 127, 14},
    {44, 160, 44},   {148, 103, 189}, {214, 39, 40},  {140, 86, 75}};

constexpr int kMarginLeft = 78, kMarginRight = 24, kHeader = 26, kTitle = 14,
              kPanelGap = 24, kFooter = 32;

struct Canvas {
  IndexedImage &img;
  void set(int x, int y, uint8_t c) {
    if (x >= 0 && y >= 0 && x < img.width && y < img.height)
      img.pixels[static_cast<size_t>(y) * img.width + x] = c;
  }
  void hline(int x0, int x1, int y, uint8_t c) {
    for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x)
      set(x, y, c);
  }
  void vline(int x, int y0, int y1, uint8_t c) {
    for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y)
      set(x, y, c);
  }
  // Bresenham: exact integer steps, no anti-aliasing (a palette image).
  void line(int x0, int y0, int x1, int y1, uint8_t c) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      set(x0, y0, c);
      if (x0 == x1 && y0 == y1)
        return;
      const int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  void square(int x, int y, int r, uint8_t c) {
    for (int yy = y - r; yy <= y + r; ++yy)
      hline(x - r, x + r, yy, c);
  }
  // Returns the x after the text.
  int text(int x, int y, const std::string &s, uint8_t c) {
    for (char ch : s) {
      for (int gy = 0; gy < kGlyphHeight; ++gy)
        for (int gx = 0; gx < kGlyphWidth; ++gx)
          if (glyph_pixel(ch, gx, gy))
            set(x + gx, y + gy, c);
      x += kGlyphAdvance;
    }
    return x;
  }
};

// Maps values to [0, 1] along an axis; log axes work in log10 units.
struct Scale {
  double lo = 0, hi = 1;
  bool log = false;
  double unit(double v) const {
    const double t = log ? std::log10(v) : v;
    return (t - lo) / (hi - lo);
  }
};

struct Rect {
  int x0, y0, x1, y1; // inclusive
  int px(const Scale &s, double v) const {
    return x0 + static_cast<int>(std::lround(s.unit(v) * (x1 - x0)));
  }
  int py(const Scale &s, double v) const {
    return y1 - static_cast<int>(std::lround(s.unit(v) * (y1 - y0)));
  }
};

double nice_step(double span, int target_ticks) {
  const double raw = span / target_ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

// Whether an axis labels its ticks in fixed notation ("0.0025", "1200") or
// in exponent notation ("2.5e-4", "1.5e+6"): one choice per axis, so the
// labels of one axis read alike.
bool fixed_notation(double max_abs, double step) { return step >= 1e-4 && max_abs < 1e6; }

// A tick label with as many digits as its step needs.
std::string format_tick(double v, double step, bool fixed) {
  if (std::fabs(v) < step * 1e-9)
    return "0";
  char buf[64];
  const int step_exp = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  if (fixed) {
    std::snprintf(buf, sizeof buf, "%.*f", std::clamp(-step_exp, 0, 6), v);
    return buf;
  }
  const int v_exp = static_cast<int>(std::floor(std::log10(std::fabs(v)) + 1e-9));
  std::snprintf(buf, sizeof buf, "%.*e", std::clamp(v_exp - step_exp, 0, 4), v);
  // "3.50e-04" -> "3.5e-4": drop trailing mantissa zeros and exponent padding.
  std::string s = buf;
  const size_t e = s.find('e');
  std::string mant = s.substr(0, e), ex = s.substr(e + 1);
  if (mant.find('.') != std::string::npos) {
    while (mant.back() == '0')
      mant.pop_back();
    if (mant.back() == '.')
      mant.pop_back();
  }
  const char sign = ex[0];
  ex = ex.substr(1);
  while (ex.size() > 1 && ex[0] == '0')
    ex.erase(0, 1);
  return mant + "e" + (sign == '-' ? "-" : "") + ex;
}

struct Tick {
  double value;
  std::string label;
};

// A linear axis around [lo, hi] with 5% room above and below.
Scale linear_scale(double lo, double hi) {
  if (hi - lo <= std::max(std::fabs(hi), std::fabs(lo)) * 1e-12) {
    const double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    return {lo - pad, hi + pad, false};
  }
  const double pad = (hi - lo) * 0.05;
  return {lo - pad, hi + pad, false};
}

std::vector<Tick> linear_ticks(const Scale &s, int target) {
  const double step = nice_step(s.hi - s.lo, target);
  const bool fixed = fixed_notation(std::max(std::fabs(s.lo), std::fabs(s.hi)), step);
  std::vector<Tick> ticks;
  for (double k = std::ceil(s.lo / step - 1e-9); k * step <= s.hi + step * 1e-9; k += 1)
    ticks.push_back({k * step, format_tick(k * step, step, fixed)});
  return ticks;
}

Scale log_scale(double lo, double hi) {
  double a = std::log10(lo), b = std::log10(hi);
  if (b - a < 1e-9) {
    a -= 0.5;
    b += 0.5;
  }
  const double pad = (b - a) * 0.05;
  return {a - pad, b + pad, true};
}

// Powers of ten, with 2x and 5x (then every multiple) when the range spans
// too few decades to show two ticks.
std::vector<Tick> log_ticks(const Scale &s) {
  for (const std::vector<int> &mults : {std::vector<int>{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
    std::vector<Tick> ticks;
    for (int d = static_cast<int>(std::floor(s.lo)); d <= static_cast<int>(std::ceil(s.hi)); ++d)
      for (int m : mults) {
        const double v = m * std::pow(10.0, d);
        const double t = std::log10(v);
        if (t >= s.lo && t <= s.hi)
          ticks.push_back({v, format_tick(v, std::pow(10.0, d),
                                          fixed_notation(std::pow(10.0, s.hi), std::pow(10.0, s.lo)))});
      }
    if (ticks.size() >= 2 || mults.size() == 9)
      return ticks;
  }
  return {};
}

// One series drawn at most once per pixel column: the first, last, min and
// max of the points that land in the column, joined to the previous column.
// A non-finite value breaks the line.
void draw_series(Canvas &cv, const Rect &r, const Scale &xs, const Scale &ys,
                 const std::vector<std::pair<int64_t, double>> &points, uint8_t colour,
                 bool markers) {
  struct Column {
    int first, last, min, max;
    bool joined; // connect to the previous column's last point
  };
  const int w = r.x1 - r.x0 + 1;
  std::vector<Column> cols(static_cast<size_t>(w));
  std::vector<bool> used(static_cast<size_t>(w), false);
  bool have_prev = false;
  for (const auto &[step, v] : points) {
    if (!std::isfinite(v) || (ys.log && v <= 0)) {
      have_prev = false;
      continue;
    }
    const int x = std::clamp(r.px(xs, static_cast<double>(step)), r.x0, r.x1) - r.x0;
    const int y = std::clamp(r.py(ys, v), r.y0, r.y1);
    Column &c = cols[x];
    if (!used[x]) {
      c = {y, y, y, y, have_prev};
      used[x] = true;
    } else {
      c.last = y;
      c.min = std::min(c.min, y);
      c.max = std::max(c.max, y);
    }
    have_prev = true;
  }
  int prev = -1;
  for (int x = 0; x < w; ++x) {
    if (!used[x])
      continue;
    const Column &c = cols[x];
    if (prev >= 0 && c.joined)
      cv.line(r.x0 + prev, cols[prev].last, r.x0 + x, c.first, colour);
    cv.vline(r.x0 + x, c.min, c.max, colour);
    if (markers)
      cv.square(r.x0 + x, c.first, 1, colour);
    prev = x;
  }
}

// Grid lines, ticks and their labels (x labels under the bottom panel only).
void draw_frame(Canvas &cv, const Rect &r, const Scale &xs, const std::vector<Tick> &xticks,
                const Scale &ys, const std::vector<Tick> &yticks, bool x_labels) {
  for (const Tick &t : yticks) {
    const int y = r.py(ys, t.value);
    cv.hline(r.x0 + 1, r.x1 - 1, y, kGrid);
    cv.hline(r.x0 - 4, r.x0, y, kBlack);
    cv.text(r.x0 - 7 - text_width(t.label), y - kGlyphHeight / 2, t.label, kBlack);
  }
  for (const Tick &t : xticks) {
    const int x = r.px(xs, t.value);
    cv.vline(x, r.y0 + 1, r.y1 - 1, kGrid);
    cv.vline(x, r.y1, r.y1 + 4, kBlack);
    if (x_labels)
      cv.text(x - text_width(t.label) / 2, r.y1 + 7, t.label, kBlack);
  }
}

// Drawn after the series: a line at the edge of its range stays inside.
void draw_border(Canvas &cv, const Rect &r) {
  cv.hline(r.x0, r.x1, r.y0, kBlack);
  cv.hline(r.x0, r.x1, r.y1, kBlack);
  cv.vline(r.x0, r.y0, r.y1, kBlack);
  cv.vline(r.x1, r.y0, r.y1, kBlack);
}

// Finite range of the drawable values (positive ones on a log axis).
bool value_range(const std::vector<std::pair<int64_t, double>> &pts, bool positive_only,
                 double &lo, double &hi) {
  lo = std::numeric_limits<double>::infinity();
  hi = -lo;
  for (const auto &p : pts)
    if (std::isfinite(p.second) && (!positive_only || p.second > 0)) {
      lo = std::min(lo, p.second);
      hi = std::max(hi, p.second);
    }
  return lo <= hi;
}

void draw_marks(Canvas &cv, const Rect &r, const Scale &xs, const std::vector<int64_t> &steps,
                bool at_top, uint8_t colour) {
  for (int64_t s : steps) {
    const int x = r.px(xs, static_cast<double>(s));
    if (at_top)
      cv.vline(x, r.y0 + 1, r.y0 + 9, colour);
    else
      cv.vline(x, r.y1 - 9, r.y1 - 1, colour);
  }
}

// Title segments in the colours of what they name, as the legend.
void draw_title(Canvas &cv, int x, int y,
                const std::vector<std::pair<std::string, uint8_t>> &parts) {
  for (const auto &[s, c] : parts)
    x = cv.text(x, y, s, c);
}

} // namespace

IndexedImage render_metrics(const MetricsHistory &h, const std::string &source, PlotSize size) {
  if (size.width < 320 || size.height < 300)
    throw std::invalid_argument("render_metrics: size " + std::to_string(size.width) + "x" +
                                std::to_string(size.height) + " is below 320x300");
  IndexedImage img;
  img.width = size.width;
  img.height = size.height;
  img.palette = kPalette;
  img.pixels.assign(static_cast<size_t>(img.width) * img.height, kWhite);
  Canvas cv{img};

  std::vector<std::pair<int64_t, double>> loss, lr, grad_norm;
  for (const auto &u : h.updates) {
    loss.emplace_back(u.step, u.loss);
    lr.emplace_back(u.step, u.lr);
    grad_norm.emplace_back(u.step, u.grad_norm);
  }

  // The step axis spans every record, skips included.
  int64_t first = std::numeric_limits<int64_t>::max(), last = std::numeric_limits<int64_t>::min();
  for (const auto &p : loss)
    first = std::min(first, p.first), last = std::max(last, p.first);
  for (const auto &p : h.evals)
    first = std::min(first, p.first), last = std::max(last, p.first);
  for (int64_t s : h.skipped)
    first = std::min(first, s), last = std::max(last, s);
  Scale xs{static_cast<double>(first), static_cast<double>(last), false};
  if (first == last)
    xs = {static_cast<double>(first) - 1, static_cast<double>(last) + 1, false};
  std::vector<Tick> xticks;
  {
    const double step = std::max(1.0, nice_step(xs.hi - xs.lo, 8));
    for (double k = std::ceil(xs.lo / step); k * step <= xs.hi; k += 1)
      xticks.push_back({k * step, format_tick(k * step, step, fixed_notation(xs.hi, step))});
  }

  char header[256];
  std::snprintf(header, sizeof header, "%s: %zu UPDATES, %zu EVALS, %zu SKIPPED, %lld NON-FINITE VALUES NOT DRAWN",
                source.c_str(), h.updates.size(), h.evals.size(), h.skipped.size(),
                static_cast<long long>(h.nonfinite));
  cv.text(kMarginLeft, 9, header, kBlack);

  const int panel_h = (img.height - kHeader - kFooter - 2 * kPanelGap - 3 * kTitle) / 3;
  auto panel_rect = [&](int i) {
    const int top = kHeader + i * (kTitle + panel_h + kPanelGap) + kTitle;
    return Rect{kMarginLeft, top, img.width - kMarginRight, top + panel_h - 1};
  };
  const bool few = h.updates.size() <= 60;

  // Loss: train and val share the axis.
  {
    const Rect r = panel_rect(0);
    double lo, hi, vlo, vhi;
    const bool has_train = value_range(loss, false, lo, hi);
    const bool has_val = value_range(h.evals, false, vlo, vhi);
    if (!has_train)
      lo = vlo, hi = vhi;
    else if (has_val)
      lo = std::min(lo, vlo), hi = std::max(hi, vhi);
    const Scale ys = has_train || has_val ? linear_scale(lo, hi) : Scale{0, 1, false};
    draw_frame(cv, r, xs, xticks, ys, linear_ticks(ys, 5), false);
    draw_series(cv, r, xs, ys, loss, kTrain, few);
    draw_series(cv, r, xs, ys, h.evals, kVal, h.evals.size() <= 200);
    draw_marks(cv, r, xs, h.skipped, false, kSkip);
    draw_marks(cv, r, xs, h.rollbacks, true, kRollback);
    draw_border(cv, r);
    draw_title(cv, r.x0, r.y0 - kTitle + 2,
               {{"TRAIN LOSS", kTrain}, {"   ", kBlack}, {"VAL LOSS", kVal}, {"   ", kBlack},
                {"SKIPPED UPDATE", kSkip}, {"   ", kBlack}, {"ROLLBACK", kRollback}});
  }
  // Learning rate.
  {
    const Rect r = panel_rect(1);
    double lo, hi;
    const Scale ys = value_range(lr, false, lo, hi) ? linear_scale(lo, hi) : Scale{0, 1, false};
    draw_frame(cv, r, xs, xticks, ys, linear_ticks(ys, 5), false);
    draw_series(cv, r, xs, ys, lr, kLr, few);
    draw_border(cv, r);
    draw_title(cv, r.x0, r.y0 - kTitle + 2, {{"LEARNING RATE", kLr}});
  }
  // Gradient norm: log scale unless a norm is zero or negative.
  {
    const Rect r = panel_rect(2);
    double lo, hi;
    value_range(grad_norm, false, lo, hi);
    const bool log = lo <= hi && lo > 0;
    Scale ys{0, 1, false};
    std::vector<Tick> yticks;
    if (log) {
      ys = log_scale(lo, hi);
      yticks = log_ticks(ys);
    } else {
      if (lo <= hi)
        ys = linear_scale(lo, hi);
      yticks = linear_ticks(ys, 5);
    }
    draw_frame(cv, r, xs, xticks, ys, yticks, true);
    draw_series(cv, r, xs, ys, grad_norm, kGradNorm, few);
    draw_marks(cv, r, xs, h.skipped, false, kSkip);
    draw_border(cv, r);
    draw_title(cv, r.x0, r.y0 - kTitle + 2,
               {{log ? "GRAD NORM (LOG SCALE, BEFORE CLIPPING)" : "GRAD NORM (BEFORE CLIPPING)",
                 kGradNorm}});
    const std::string label = "STEP";
    cv.text((r.x0 + r.x1 - text_width(label)) / 2, r.y1 + 19, label, kBlack);
  }
  return img;
}

PlotResult plot_run(const std::string &run, const std::string &png_path) {
  std::error_code ec;
  const fs::path metrics = fs::is_directory(run, ec) ? fs::path(run) / "metrics.jsonl" : fs::path(run);
  const MetricsHistory h = read_metrics(metrics.string());
  PlotResult r;
  r.png_path = png_path.empty() ? (metrics.parent_path() / "metrics.png").string() : png_path;
  write_file_atomic(r.png_path, encode_png(render_metrics(h, metrics.filename().string())));
  r.updates = static_cast<int64_t>(h.updates.size());
  r.evals = static_cast<int64_t>(h.evals.size());
  r.skipped = static_cast<int64_t>(h.skipped.size());
  r.nonfinite = h.nonfinite;
  return r;
}

} // namespace llamart::observe
