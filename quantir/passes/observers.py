"""Range observers: streaming statistics of one tensor's values, turned into a (min, max).

`make_observer(method)` gives an object with `update(batch)` (called once per calibration
batch) and `range()` (the calibrated range). Observers return *raw* ranges; making the
range contain 0, enforcing a minimum width and snapping it to a grid is the encoding
step's job (QNN rules, see shared notes), except where a method's own search needs the
grid (`mse`, below).

Methods
-------
- `minmax`: running min / max of every value seen.
- `moving_average`: per-batch min / max smoothed as in TensorFlow / AIMET / SiMa:
  m <- m + 0.01 * (batch_min - m), likewise for the max; the first batch initialises.
  The result depends on how the data is batched, by design.
- `mse` (2048 bins): searches the clipping range whose `bits`-bit uniform quantization
  has the least expected squared error on the histogram (AIMET tf_enhanced / SiMa
  HistogramMSE). Asymmetric: candidates [a, b] with a <= 0 <= b on a 129 x 129 grid over
  [min(min, 0), 0] x [0, max(max, 0)] refined by a 33 x 33 grid around the best, each
  snapped as QNN does (scale = (b - a) / (2^bits - 1), zero point rounded, so float 0
  is exactly on the grid); the snapped range is returned. Symmetric: thresholds t over
  a 1024-point grid of (0, max|x|] refined by 65 points, scale t / (2^(bits-1) - 1)
  (the restricted int8 range [-127, 127] of onnxruntime / TFLite), returns (-t, t).
  Expected error = rounding noise scale^2 / 12 for every value inside except exact zeros
  (counted separately: they quantize without error, and ReLU outputs are full of them)
  + the exact clipping error of the values outside, with values uniform inside a bin.
- `entropy` (512 bins): TensorRT's KL-divergence calibration. A window of histogram
  bins [s, e) gives the reference P = the window's counts with the counts outside
  added to its first / last bin, and Q = the window's own counts (outliers excluded)
  merged into L levels and spread evenly back over the window's non-empty bins; the
  window with least KL(P || Q) wins (ties: the widest). L = 2^(bits-1) (128 at 8 bits)
  in both modes: TensorRT's 128 levels for its absolute-value variant, and onnxruntime's
  default num_quantized_bins = 128 for the signed one. Windows need >= L bins, and
  windows whose first / last bin is empty are skipped (TensorRT gives them infinite
  divergence); when nothing qualifies the full range is returned. Symmetric: histogram
  of |x|, windows [0, e) (TensorRT), returns (-t, t) with t <= max|x|. Asymmetric:
  histogram of x, windows contain the bin of 0 (when the data spans 0; otherwise the
  end nearest 0 stays at the data's min / max), at most 64 candidate ends per side;
  returns the window clamped to the data's [min, max]. Unlike TensorRT / onnxruntime,
  exact zeros are left out of the divergence (pytorch-quantization's `skip_zeros`):
  they quantize without error for any range, and ReLU's spike at 0 otherwise drags
  the threshold down. Limitation: the smallest threshold reachable is L bins, i.e.
  1/4 to 1/2 of the observed range with 512 bins (TensorRT: 2048 bins, 1/16); when a
  few far outliers hold the range open, pass `bins=2048` to clip harder. KL optima are
  flat and noisy, so results move by a few % of the range with the binning.
- `percentile` (1024 bins): onnxruntime's definition, checked against its source
  (`HistogramCollector.compute_percentile`): with p = 99.9, symmetric takes the p-th
  percentile t of |x| and returns (-t, t); asymmetric cuts (100 - p) % of the values
  in total, half from each tail, i.e. the (100 - p)/2 and (100 + p)/2 percentiles
  (0.05 % and 99.95 %), not (100 - p) and p. One deviation: when the data does not
  span 0 (e.g. ReLU outputs) the whole (100 - p) % is cut from the tail away from 0
  and the end nearest 0 stays at the data's min / max, since the encoding widens the
  range to 0 anyway. Percentiles are interpolated linearly inside the bin (onnxruntime
  takes the bin's left edge) and clamped to the data's [min, max]; the error is at
  most one bin width.

Streaming histograms and their error
------------------------------------
A histogram keeps a fixed number of equal-width bins plus the exact min / max: its
memory never depends on the number of samples or batches. The first non-empty batch
sets the range to exactly its [min, max] (|x| histograms start at 0). When a later
batch falls outside, the range is rebuilt by merging whole bins: the new width is an
integer multiple k of the old one and the new edges lie on the old grid, so every old
bin falls inside exactly one new bin and the merged counts are *exactly* what the new
edges would give all the data seen (up to float rounding at edges; no proportional
re-spreading, so no smearing error accumulates). k and the new origin are chosen from
the bins that hold data (not the old, partly empty range), with the spare room put on
the side(s) that grew, so the width stays below about 2 * span / bins (span = max - min
of all the data; |x| histograms: max|x|). That width is the only error: percentile is
within one bin of the exact percentile, and one big batch vs many small ones differ by
at most about two bins for percentile and mse. Growth from a single-valued start (width
0) is exact too; if k would overflow a float, old bins move by their centres (error one
new bin).

Edge cases
----------
`symmetric` changes the search of the histogram methods only; minmax and
moving_average return the raw min / max either way (the encoding symmetrises). A
tensor holding one value v (all zeros, a constant, a single element) gives (v, v), or
(-|v|, |v|) for symmetric histogram methods; `range_is_degenerate` flags (nearly)
zero-width ranges so the caller can warn that the tensor never varied.

Errors
------
NaN / Inf values and never-updated observers raise `QuantirError` whose message does
not name the tensor: the caller prefixes it (f"tensor '{name}': {error}").
`update` ignores empty arrays and is vectorised (min / max, one multiply-and-truncate
and `np.bincount` per batch).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from quantir.errors import QuantirError

METHODS = ("minmax", "moving_average", "mse", "entropy", "percentile")

MOVING_AVERAGE_COEFFICIENT = 0.01
MSE_BINS = 2048
ENTROPY_BINS = 512
PERCENTILE_BINS = 1024
DEGENERATE_WIDTH = 1e-8


class Observer(Protocol):
    """Streams one tensor's values and reports the calibrated range."""

    def update(self, array: np.ndarray) -> None:
        """Add one batch of the tensor's values (any shape)."""
        ...

    def range(self) -> tuple[float, float]:
        """The calibrated (min, max); QuantirError if no value was ever seen."""
        ...


def range_is_degenerate(low: float, high: float, tolerance: float = DEGENERATE_WIDTH) -> bool:
    """True when the range is (nearly) a single value: the tensor never really varied."""
    return not abs(high - low) >= tolerance  # `not >=` so that NaN counts as degenerate


def make_observer(method: str, bits: int = 8, symmetric: bool = False,
                  percentile: float = 99.9, bins: int | None = None) -> Observer:
    """A fresh observer for `method` (one of METHODS); `bins` overrides the histogram
    methods' bin count (2048 / 512 / 1024)."""
    if method not in METHODS:
        raise QuantirError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 2 <= bits <= 32:
        raise QuantirError(f"calibration bit width {bits!r} is not supported; give an integer from 2 to 32")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int | np.integer)
                             or bins < 16):
        raise QuantirError(f"histogram bin count {bins!r} is not supported; give an integer >= 16")
    if method == "minmax":
        return MinMaxObserver()
    if method == "moving_average":
        return MovingAverageObserver()
    if method == "mse":
        return MSEObserver(int(bits), symmetric, bins or MSE_BINS)
    if method == "entropy":
        return EntropyObserver(int(bits), symmetric, bins or ENTROPY_BINS)
    if not 0.0 < percentile <= 100.0:
        raise QuantirError(f"percentile {percentile} is out of range; give a value in (0, 100], "
                           "e.g. 99.9")
    return PercentileObserver(float(percentile), symmetric, bins or PERCENTILE_BINS)


def _extrema(array: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """(flat values, min, max) of a batch, None if it is empty; NaN / Inf raise."""
    values = np.asarray(array)
    if values.size == 0:
        return None
    if values.dtype.kind not in "biuf":
        raise QuantirError(f"has values of dtype {values.dtype}; only real numbers can be calibrated")
    # min / max propagate NaN, so they double as the NaN check at no extra pass.
    low, high = float(values.min()), float(values.max())
    if math.isnan(low) or math.isnan(high):
        raise QuantirError("contains NaN; check the calibration data and the float model "
                           "(0/0 or overflow upstream), or leave this tensor out of calibration")
    if math.isinf(low) or math.isinf(high):
        raise QuantirError("contains Inf; check the calibration data and the float model "
                           "(overflow upstream), or leave this tensor out of calibration")
    return values.reshape(-1), low, high


def _never_updated() -> QuantirError:
    return QuantirError("no values were observed; calibrate with data that reaches this tensor "
                        "(at least one non-empty batch)")


class MinMaxObserver:
    """Running min / max."""

    def __init__(self) -> None:
        self.low = math.inf
        self.high = -math.inf

    def update(self, array: np.ndarray) -> None:
        found = _extrema(array)
        if found is not None:
            self.low = min(self.low, found[1])
            self.high = max(self.high, found[2])

    def range(self) -> tuple[float, float]:
        if self.low > self.high:
            raise _never_updated()
        return self.low, self.high


class MovingAverageObserver:
    """Exponential moving average of per-batch min / max (TensorFlow / AIMET style)."""

    def __init__(self, coefficient: float = MOVING_AVERAGE_COEFFICIENT) -> None:
        self.coefficient = coefficient
        self.low: float | None = None
        self.high: float | None = None

    def update(self, array: np.ndarray) -> None:
        found = _extrema(array)
        if found is None:
            return
        _, low, high = found
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        else:
            self.low += self.coefficient * (low - self.low)
            self.high += self.coefficient * (high - self.high)

    def range(self) -> tuple[float, float]:
        if self.low is None or self.high is None:
            raise _never_updated()
        return self.low, self.high


class StreamingHistogram:
    """`bins` equal-width bins whose range grows by merging whole bins (module docstring).

    Width 0 means every value seen so far equals `low` (all counts in bin 0).
    `from_zero` pins the lower edge at 0, for histograms of |x|.
    """

    def __init__(self, bins: int, from_zero: bool = False) -> None:
        self.bins = bins
        self.from_zero = from_zero
        self.counts = np.zeros(bins)
        self.low = 0.0
        self.width = 0.0
        self.total = 0
        self.min = math.inf
        self.max = -math.inf

    @property
    def edges(self) -> np.ndarray:
        return self.low + np.arange(self.bins + 1) * self.width

    def add(self, values: np.ndarray, low: float, high: float) -> None:
        """Add flat `values` whose min / max are `low` / `high`."""
        if self.total == 0:
            self.low = 0.0 if self.from_zero else low
            self.width = (high - self.low) / self.bins
        else:
            self._cover(low, high)
        if self.width == 0.0:
            self.counts[0] += values.size
        else:
            self.counts += self._bin_counts(values)
        self.total += values.size
        self.min = min(self.min, low)
        self.max = max(self.max, high)

    def index_of(self, value: float) -> int:
        """The bin holding `value` (clamped to the histogram)."""
        if self.width == 0.0:
            return 0
        return int(min(max(math.floor((value - self.low) / self.width), 0), self.bins - 1))

    def _bin_counts(self, values: np.ndarray) -> np.ndarray:
        # Faster than np.histogram (no edge re-checks); float64 keeps the edges exact
        # enough for the merge argument, and clipping absorbs rounding at the ends.
        scaled = values.astype(np.float64)
        scaled -= self.low
        scaled /= self.width  # not *= 1 / width: that overflows for subnormal widths
        index = scaled.astype(np.intp)
        np.clip(index, 0, self.bins - 1, out=index)
        return np.bincount(index, minlength=self.bins)

    def _cover(self, low: float, high: float) -> None:
        """Grow the range to contain [low, high], keeping counts exact where possible."""
        if self.width == 0.0:
            if low == high == self.low:
                return
            new_low = 0.0 if self.from_zero else min(self.low, low)
            self._regrid(new_low, (max(self.low, high) - new_low) / self.bins)
            return
        top = self.low + self.bins * self.width
        if low >= self.low and high <= top:
            return
        below_steps = (low - self.low) / self.width
        above_steps = (high - self.low) / self.width
        if not (math.isfinite(below_steps) and math.isfinite(above_steps)):
            new_low = 0.0 if self.from_zero else min(self.min, low)  # absurd growth: by centres
            self._regrid(new_low, (max(self.max, high) - new_low) / self.bins)
            return
        # In units of old bins ("cells", 0 = the current first bin): the new grid must hold
        # the cells with data and the new values. Sizing from the data (not from the
        # current, partly empty range) keeps the width within ~2 * span / bins.
        first = 0 if self.from_zero else min(self.index_of(self.min), math.floor(below_steps))
        last = max(self.index_of(self.max), math.ceil(above_steps) - 1)
        needed = last - first + 1
        factor = -(-needed // self.bins)
        room = factor * self.bins - needed
        # Spare room goes where the data grew, so that further growth there is absorbed.
        grew_down, grew_up = low < self.low, high > top
        if self.from_zero or not grew_down:
            start = first
        elif grew_up:
            start = first - room // 2
        else:
            start = first - room
        self._regrid(self.low + start * self.width, factor * self.width)

    def _regrid(self, new_low: float, new_width: float) -> None:
        # Old bin centres land strictly inside the new bins when the grids are aligned
        # (the new edges are old edges), so moving by centre is then an exact merge.
        centres = self.low + (np.arange(self.bins) + 0.5) * self.width
        position = np.floor((centres - new_low) / new_width)
        index = np.clip(position, 0, self.bins - 1).astype(np.intp)
        self.counts = np.bincount(index, weights=self.counts, minlength=self.bins)
        self.low, self.width = new_low, new_width


class _HistogramObserver:
    """Shared part of the histogram observers: |x| histograms when symmetric."""

    def __init__(self, symmetric: bool, bins: int) -> None:
        self.symmetric = symmetric
        self.histogram = StreamingHistogram(bins, from_zero=symmetric)

    def update(self, array: np.ndarray) -> None:
        found = _extrema(array)
        if found is None:
            return
        values, low, high = found
        if self.symmetric:
            values = np.abs(values)
            low, high = 0.0 if low <= 0.0 <= high else min(abs(low), abs(high)), max(-low, high)
        self._observe(values)
        self.histogram.add(values, low, high)

    def _observe(self, values: np.ndarray) -> None:
        """Extra statistics a subclass keeps (values are |x| when symmetric)."""

    @property
    def bin_width(self) -> float:
        """The current bin width: the resolution of the statistics."""
        return self.histogram.width

    def _checked(self) -> StreamingHistogram:
        if self.histogram.total == 0:
            raise _never_updated()
        return self.histogram

    def _degenerate_range(self) -> tuple[float, float]:
        h = self.histogram
        return (-h.max, h.max) if self.symmetric else (h.min, h.max)


class _SearchObserver(_HistogramObserver):
    """A histogram observer that searches a range for `bits`-bit quantization; exact
    zeros are counted apart (they cost nothing and would skew the search)."""

    def __init__(self, bits: int, symmetric: bool, bins: int) -> None:
        super().__init__(symmetric, bins)
        self.bits = bits
        self.zeros = 0

    def _observe(self, values: np.ndarray) -> None:
        self.zeros += int(np.count_nonzero(values == 0))


class PercentileObserver(_HistogramObserver):
    """onnxruntime's percentile calibration on a streaming 1024-bin histogram."""

    def __init__(self, percentile: float = 99.9, symmetric: bool = False,
                 bins: int = PERCENTILE_BINS) -> None:
        super().__init__(symmetric, bins)
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        h = self._checked()
        if h.width == 0.0:
            return self._degenerate_range()
        fraction = self.percentile / 100.0
        if self.symmetric:
            threshold = self._quantile(fraction)
            return -threshold, threshold
        if h.min >= 0.0:
            return h.min, self._quantile(fraction)
        if h.max <= 0.0:
            return self._quantile(1.0 - fraction), h.max
        cut = (1.0 - fraction) / 2.0
        return self._quantile(cut), self._quantile(1.0 - cut)

    def _quantile(self, fraction: float) -> float:
        """The value below which `fraction` of the counts lie, linear inside a bin."""
        h = self.histogram
        cumulative = np.cumsum(h.counts)
        target = fraction * cumulative[-1]
        k = min(int(np.searchsorted(cumulative, target, side="left")), h.bins - 1)
        before = cumulative[k] - h.counts[k]
        inside = (target - before) / h.counts[k] if h.counts[k] > 0 else 0.0
        value = h.low + (k + min(max(inside, 0.0), 1.0)) * h.width
        return float(min(max(value, h.min), h.max))


class MSEObserver(_SearchObserver):
    """Least expected quantization MSE over candidate ranges, on a 2048-bin histogram."""

    coarse = 128  # grid steps per side (asymmetric), refined by `fine` around the best
    fine = 32
    coarse_symmetric = 1024
    fine_symmetric = 64

    def __init__(self, bits: int = 8, symmetric: bool = False, bins: int = MSE_BINS) -> None:
        super().__init__(bits, symmetric, bins)

    def range(self) -> tuple[float, float]:
        h = self._checked()
        if h.width == 0.0:
            return self._degenerate_range()
        cost = _MSECost(h, self.zeros)
        if self.symmetric:
            return self._symmetric_range(cost)
        return self._asymmetric_range(cost)

    def _symmetric_range(self, cost: _MSECost) -> tuple[float, float]:
        levels = 2 ** (self.bits - 1) - 1
        top = self.histogram.max
        step = top / self.coarse_symmetric
        thresholds = np.arange(1, self.coarse_symmetric + 1) * step
        best = thresholds[np.argmin(cost.symmetric(thresholds, levels))]
        around = np.linspace(max(best - step, step / self.fine_symmetric), min(best + step, top),
                             self.fine_symmetric + 1)
        thresholds = np.concatenate([[best], around])
        best = float(thresholds[np.argmin(cost.symmetric(thresholds, levels))])
        return -best, best

    def _asymmetric_range(self, cost: _MSECost) -> tuple[float, float]:
        h = self.histogram
        steps = 2**self.bits - 1
        lowest, highest = min(h.min, 0.0), max(h.max, 0.0)
        a_step, b_step = -lowest / self.coarse, highest / self.coarse
        grid = np.arange(self.coarse + 1)
        a, b = np.meshgrid(-grid * a_step, grid * b_step, indexing="ij")
        best_a, best_b, best_cost = self._best_snapped(cost, a.ravel(), b.ravel(), steps)
        # Refine around the coarse winner (its snapped form can sit off the grid).
        a_fine = np.linspace(max(best_a - a_step, lowest), min(best_a + a_step, 0.0), self.fine + 1)
        b_fine = np.linspace(max(best_b - b_step, 0.0), min(best_b + b_step, highest), self.fine + 1)
        a, b = np.meshgrid(a_fine, b_fine, indexing="ij")
        fine_a, fine_b, fine_cost = self._best_snapped(cost, a.ravel(), b.ravel(), steps)
        if fine_cost < best_cost:
            return fine_a, fine_b
        return best_a, best_b

    @staticmethod
    def _best_snapped(cost: _MSECost, a: np.ndarray, b: np.ndarray, steps: int) \
            -> tuple[float, float, float]:
        keep = b - a > 0
        a, b = a[keep], b[keep]
        scale = (b - a) / steps
        zero_point = np.clip(np.round(-a / scale), 0, steps)
        low, high = -zero_point * scale, (steps - zero_point) * scale
        costs = cost.asymmetric(low, high, scale)
        i = int(np.argmin(costs))
        return float(low[i]), float(high[i]), float(costs[i])


class _MSECost:
    """Expected squared quantization error of candidate ranges, from prefix sums of a
    histogram (values uniform within a bin); O(1) per candidate, in bin units."""

    def __init__(self, histogram: StreamingHistogram, zeros: int) -> None:
        self.h = histogram
        counts = histogram.counts
        centres = np.arange(histogram.bins) + 0.5
        self.counts = counts
        self.prefix = [np.concatenate([[0.0], np.cumsum(counts * centres**p)]) for p in range(3)]
        self.zeros = zeros

    def _units(self, value: np.ndarray) -> np.ndarray:
        return (value - self.h.low) / self.h.width

    def _above(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mass, clipping cost) of the values above t (bin units)."""
        bins = self.h.bins
        k = np.clip(np.floor(t), -1, bins).astype(np.intp)
        start = np.clip(k + 1, 0, bins)
        s0, s1, s2 = (p[bins] - p[start] for p in self.prefix)
        cost = s2 - 2 * t * s1 + t * t * s0 + s0 / 12.0
        partial = (k >= 0) & (k < bins)
        inside = np.where(partial, self.counts[np.clip(k, 0, bins - 1)], 0.0)
        fraction = np.where(partial, k + 1 - t, 0.0)
        return s0 + inside * fraction, cost + inside * fraction**3 / 3.0

    def _below(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mass, clipping cost) of the values below t (bin units)."""
        bins = self.h.bins
        k = np.clip(np.floor(t), -1, bins).astype(np.intp)
        end = np.clip(k, 0, bins)
        p0, p1, p2 = (p[end] for p in self.prefix)
        cost = t * t * p0 - 2 * t * p1 + p2 + p0 / 12.0
        partial = (k >= 0) & (k < bins)
        inside = np.where(partial, self.counts[np.clip(k, 0, bins - 1)], 0.0)
        fraction = np.where(partial, t - k, 0.0)
        return p0 + inside * fraction, cost + inside * fraction**3 / 3.0

    def _noise(self, inside_mass: np.ndarray, scale_units: np.ndarray) -> np.ndarray:
        # Exact zeros are always inside (every candidate contains 0) and exact on the grid.
        return np.maximum(inside_mass - self.zeros, 0.0) * scale_units**2 / 12.0

    def asymmetric(self, low: np.ndarray, high: np.ndarray, scale: np.ndarray) -> np.ndarray:
        below_mass, below_cost = self._below(self._units(low))
        above_mass, above_cost = self._above(self._units(high))
        inside = self.h.total - below_mass - above_mass
        return below_cost + above_cost + self._noise(inside, scale / self.h.width)

    def symmetric(self, thresholds: np.ndarray, levels: int) -> np.ndarray:
        above_mass, above_cost = self._above(self._units(thresholds))
        scale_units = thresholds / levels / self.h.width
        return above_cost + self._noise(self.h.total - above_mass, scale_units)


class EntropyObserver(_SearchObserver):
    """TensorRT-style KL-divergence calibration on a streaming 512-bin histogram."""

    positions = 64  # candidate window ends per side (asymmetric)
    thresholds = 256  # candidate thresholds (symmetric)

    def __init__(self, bits: int = 8, symmetric: bool = False, bins: int = ENTROPY_BINS) -> None:
        super().__init__(bits, symmetric, bins)

    def range(self) -> tuple[float, float]:
        h = self._checked()
        if h.width == 0.0:
            return self._degenerate_range()
        levels = 2 ** (self.bits - 1)
        first, last = h.index_of(h.min), h.index_of(h.max) + 1  # the bins holding data
        # Exact zeros quantize without error whatever the range, so they say nothing
        # about where to clip; left in, ReLU's spike at 0 dominates the divergence.
        counts = h.counts.copy()
        if h.min <= 0.0 <= h.max:
            counts[h.index_of(0.0)] -= self.zeros
        occupied = counts > 0
        if self.symmetric:
            ends = _spread(np.flatnonzero(occupied[levels - 1:last]) + levels, self.thresholds)
            starts = np.zeros_like(ends)
        else:
            starts, ends = self._windows(h, occupied, levels, first, last)
        if len(starts) == 0:
            return self._full_range()
        divergence = kl_divergences(counts, starts, ends, levels)
        if not np.isfinite(divergence).any():
            return self._full_range()
        best = np.flatnonzero(divergence == divergence.min())
        choice = best[np.argmax((ends - starts)[best])]
        low = max(h.low + starts[choice] * h.width, h.min)
        high = min(h.low + ends[choice] * h.width, h.max)
        return (-float(high), float(high)) if self.symmetric else (float(low), float(high))

    def _full_range(self) -> tuple[float, float]:
        h = self.histogram
        return (-h.max, h.max) if self.symmetric else (h.min, h.max)

    def _windows(self, h: StreamingHistogram, occupied: np.ndarray, levels: int, first: int,
                 last: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate windows [s, e): ends on non-empty bins, around the bin of 0."""
        if h.min >= 0.0:
            split = first + 1  # the window starts at the data's min (nearest 0)
        elif h.max <= 0.0:
            split = last - 1  # the window ends at the data's max (nearest 0)
        else:
            split = h.index_of(0.0) + 1
        starts = np.flatnonzero(occupied[first:split]) + first
        ends = np.flatnonzero(occupied[split - 1:last]) + split  # e - 1 is non-empty
        if h.min >= 0.0:
            starts = np.array([first])
        if h.max <= 0.0:
            ends = np.array([last])
        s, e = np.meshgrid(_spread(starts, self.positions), _spread(ends, self.positions),
                           indexing="ij")
        s, e = s.ravel(), e.ravel()
        keep = e - s >= levels
        return s[keep], e[keep]


def _spread(positions: np.ndarray, most: int) -> np.ndarray:
    """At most about `most` of the sorted `positions`, evenly spread, keeping both ends."""
    if len(positions) <= most:
        return positions
    stride = -(-len(positions) // most)
    return np.unique(np.append(positions[::stride], positions[-1]))


def kl_divergences(counts: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   levels: int) -> np.ndarray:
    """KL(P || Q) of each window [start, end) of a histogram quantized to `levels`
    (TensorRT's definition; see the module docstring). Windows must be >= levels wide;
    one whose first or last bin is empty gets inf where P has outliers there."""
    counts = np.asarray(counts, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    total = cumulative[-1]
    widths = np.asarray(ends) - np.asarray(starts)
    result = np.full(len(widths), np.inf)
    order = np.argsort(widths, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(widths[order])) + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for chosen in groups:  # windows of one width share the bin -> level map
            if len(chosen) == 0:
                continue
            width = int(widths[chosen[0]])
            first = np.asarray(starts)[chosen]
            windows = counts[first[:, np.newaxis] + np.arange(width)]
            level = (np.arange(width) * levels) // width
            bounds = (np.arange(levels) * width + levels - 1) // levels  # first bin of each level
            nonzero = windows > 0
            level_sum = np.add.reduceat(windows, bounds, axis=1)
            level_nonzero = np.add.reduceat(nonzero.astype(np.float64), bounds, axis=1)
            q = (level_sum / np.maximum(level_nonzero, 1.0))[:, level] * nonzero
            p = windows
            p[:, 0] += cumulative[first]
            p[:, -1] += total - cumulative[first + width]
            p /= p.sum(axis=1, keepdims=True)
            q /= q.sum(axis=1, keepdims=True)
            terms = p * np.log(p / q)
            terms[p == 0] = 0.0
            divergence = terms.sum(axis=1)
            divergence[np.isnan(divergence)] = np.inf
            result[chosen] = divergence
    return result
