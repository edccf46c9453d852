"""Every threshold preprocessing uses, named, in one frozen dataclass.

Sizes are fractions of the analysed image or of the digit unless their name ends in ``_px``.
Chosen on renderer A's situations (``digitlab.synth``) with MNIST *training* digits and on the
earlier user-style renders; scored on renderer B (``benchmarks/renderer_b.py``) with MNIST
*test* digits (docs/predict.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    # The MNIST field: digits fitted into a box x box square, centred by mass in size x size.
    size: int = 28
    box: int = 20
    # Decoding: analysis resolution (time ~ area) and the longest side (wide strips keep height)
    work_area: int = 320 * 320
    work_side: int = 768
    # A crop (a form cell, a thumbnail, a tight cut) is smaller than crop_px on its short side
    # or crop_long_px on its long side:
    # one paper level, and the ink may touch the borders. Crops smaller than `tiny_px` on
    # their long side are enlarged by a whole factor to about `tiny_target_px` first, and every
    # crop is padded by `crop_pad` of its long side, so that a digit filling the frame is read.
    crop_px: int = 40
    crop_long_px: int = 96
    # A bigger picture in which the ink covers so much that no paper level stands out is read
    # as a crop too (a bold digit cut out tightly) when that finds at most `cell_pieces`
    # pieces of ink (noise breaks up into many)
    cell_pieces: int = 3
    tiny_px: int = 32
    tiny_target_px: int = 64
    crop_pad: float = 0.2
    # A crop enlarged blockwise by a whole factor up to `block_max_px` (nearest neighbour: a
    # thumbnail blown up) is read at the size it was drawn at: its steps (any channel changing
    # by over `block_step` between neighbours) fall, `block_share` of them, at one phase
    block_max_px: int = 8
    block_step: float = 0.1
    block_share: float = 0.9
    # A crop whose two grey classes cover 30-70% each is a close call: the paper is the class
    # whose widest inscribed disc is `crop_wider` times the other's (paper has room, ink is
    # strokes); when neither is, the class covering the border decides
    crop_wider: float = 1.25
    # Ink: the stroke must differ from the paper by this much (fraction of full scale) ...
    blank_contrast: float = 0.08
    # ... and the image is "noise" when the paper's own spread is this large
    noisy_paper: float = 0.05
    # A paper level up to this much darker than its surroundings, over a region wider than
    # any stroke, is a tint of the paper (a shaded form cell, a shadow's edge), not ink
    tint_max: float = 0.25
    # A page's paper colour is measured on its border ring, unless the ring's median is under
    # `dark_ring` of the page's light level (a bold box printed along the edge fills the ring)
    dark_ring: float = 0.5
    # A page's polarity is judged against a plane through its border's medians, unless they
    # stray from any plane by more than `border_spread` (a bold digit and a box both touching
    # the edges of a cell cut out tightly): then against the whole image's median
    border_spread: float = 0.12
    # Hysteresis, as fractions of the normalised stroke contrast: seeds and region
    high: float = 0.5
    low: float = 0.3
    # Printed structure: straight runs at least `line_min` of the image side long are line
    # candidates (tilts of about 1 px per `line_min` tolerated); a candidate is printed when
    # it runs across `line_span` of the image, or when it is a side of a rectangle (its ends
    # meet perpendicular candidates within `corner_tol` of the image's long side: rounded
    # corners leave a gap); a row of cells' dividers meet its lines at T-junctions, within
    # `tee_tol` of the image's short side (of a wide strip's height: a 1 ending near a line is
    # no divider); candidates thicker
    # than `line_max_thick` of the image's short side are strokes or blobs, never lines.
    line_min: float = 0.3
    line_span: float = 0.8
    corner_tol: float = 0.1
    tee_tol: float = 0.03
    line_max_thick: float = 0.08
    # A box's side more than `side_bold` times as thick as every line across its direction,
    # plus a pixel, is a stroke (a box's sides are printed alike)
    side_bold: float = 2.0
    # A line shorter than that is written on (an answer blank) when the writing above it stays
    # within its length and short of one end by `answer_beyond` of it, reaches below it by at
    # most `answer_below` of its height above, its ends turn no corner, and it is at most
    # `answer_thin` times as thick as the writing's strokes (printed finer than a pen writes)
    answer_beyond: float = 0.05
    answer_below: float = 0.3
    answer_thin: float = 0.6
    # ... and they are found on the ink map where it exceeds this (faint grids included)
    line_faint: float = 0.12
    # A page turned askew by `skew_min_deg` to `skew_max_deg` (its long lines drift out of
    # the search's reach) is straightened before the line search, by the angle of its
    # longest straight piece of ink: one at least `skew_span` of the image wide,
    # `skew_aspect` times as long as deep, filling `skew_fill` of its smallest rectangle
    skew_min_deg: float = 0.5
    skew_max_deg: float = 10.0
    skew_span: float = 0.6
    skew_aspect: float = 2.5
    skew_fill: float = 0.75
    # ... or, failing that (a comb, cells open at the top), by the angle of the longest
    # straight line in it, when the line drifts by `skew_line_drift` px or more along its run
    skew_line_drift: float = 4.0
    # A line that drifts by `drift_px` or more along its run (a page about a degree askew,
    # not straightened) counts as a pixel thicker when lines printed like it are compared
    # with it
    drift_px: float = 3.0
    # Printed lines run parallel (or square) to each other: one slanting from them by
    # `line_slant` (about 6 degrees) or more, and drifting `skew_line_drift` px or more along
    # its run, is a stroke (a 7's stem from line to line)
    line_slant: float = 0.1
    # Lines up to `frame_max_thick` thick are printed too when within `frame_edge` of an edge
    # with a twin (bold or not, but at least 1/`frame_twin` as thick: a 7's bar near the top of
    # a thinly printed box has none) about as long near the opposite one (a small cell's frame)
    frame_max_thick: float = 0.12
    frame_edge: float = 0.25
    frame_twin: float = 3.0
    # ... and so are lines across the image up to `frame_max_thick`, `line_bold` times longer
    # than thick (a bold baseline under a short row of cells)
    line_bold: float = 20.0
    # A candidate within `edge_margin` of the image's edge, along it, is a box's side that the
    # cut left there
    edge_margin: float = 0.03
    # A page's ink that reaches its edge only through pieces lying within `edge_sliver` of
    # the short side from it (a box's side cut askew along the edge) is not cut off: those
    # pieces are left out
    edge_sliver: float = 0.08
    # A closed frame the line search missed (askew, rounded, small): a piece of ink at least
    # `frame_min` of the image across each way (or, looked for before the line search, of its
    # short side each way while narrower than that: a row's separate boxes) whose outline
    # fills `frame_rect` of its smallest enclosing rectangle (any tilt) and lies near that
    # rectangle's sides for `frame_straight` of its length, that is solid ink (`frame_solid`
    # of the pixels) from the outline in for at most `frame_max_thick` of the image, and at
    # most `frame_fill` ink further in: its ring is taken out when strong ink lies inside
    frame_min: float = 0.35
    frame_rect: float = 0.9
    frame_straight: float = 0.6
    frame_solid: float = 0.6
    frame_fill: float = 0.5
    # Short ticks hanging off a removed line (comb fields): at least tick_min of the image side
    # (they count as corners of a frame), shorter than tick_max of the removed frame's height,
    # thin and straight.
    tick_min: float = 0.08
    tick_max: float = 0.4
    # A tick is three times longer than thick, its thickness its pixels over its length where
    # its box is at most `tick_lean` px thicker than that (soft edges, the flare where it meets
    # its line), else its box's (a run leaning or bending: a 7's hook, a 0's top)
    tick_lean: float = 1.5
    # Ticks hanging off a lone line, two or more alike, may be as stubby as `stub_aspect` times
    # longer than wide (a comb field printed with a broad pen)
    stub_aspect: float = 1.5
    # Number mode: a row's digits are at least `mark_tall` of the tallest one tall, more than
    # `speck_area` of their median area where shorter than `speck_tall` of it, and at least
    # `faint_mark` as dark as the others (the ink map's 90th percentile over each)
    mark_tall: float = 0.35
    speck_tall: float = 0.5
    speck_area: float = 0.2
    faint_mark: float = 0.6
    # Selection: pieces of a digit lie within piece_reach of its size of each other, or
    # big_piece_reach for a piece big_piece x the main stroke's area; small pieces chained to
    # it by gaps under dash_gap of its size join it (a fine pen's dashes).
    piece_reach: float = 0.25
    big_piece_reach: float = 0.6
    big_piece: float = 0.5
    dash_gap: float = 0.04
    # A mark filled and thick enough to be a solid blob is a digit when loops show in it:
    # lighter than `solid_core` of the stroke's ink, or, in a crop, dipping `loop_dip` under
    # the mean of its neighbourhood (a tiny cell's loops are a pixel each); in a crop, a solid
    # bar `upright` times as tall as it is wide is a 1 filling its cell, never a blob
    solid_core: float = 0.75
    loop_dip: float = 0.15
    upright: float = 2.0
    # Fitting: strokes thinner than this (px at 28x28) are dilated (MNIST: median 3.2 px)
    min_stroke: float = 1.7


PARAMS = Params()
