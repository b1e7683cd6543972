package hashiflex

import chisel3._
import chisel3.util._
import chisel3.experimental.hierarchy.{instantiable, public, Definition, Instance}

import scala.collection.mutable

final case class WindowParams(channels: Int, height: Int, width: Int, kernel: Int, stride: Int, padding: Padding,
                              bits: Int, parIn: Int = 1, parOut: Int = 1, padValue: BigInt = 0) {
  require(padValue >= 0 && padValue.bitLength <= bits, s"padValue $padValue must be a raw $bits-bit pattern")
  val outH: Int = padding.outHW(height, width, kernel, stride)._1
  val outW: Int = padding.outHW(height, width, kernel, stride)._2
  private def top = padding.top
  require(Window.fits(parIn, height, width), s"input parallelism $parIn must divide the width $width or be whole rows dividing the height $height")
  require(Window.fits(parOut, outH, outW), s"output parallelism $parOut must divide the output width $outW or be whole rows dividing the height $outH")
  /** Whole rows per beat on each side (1 when a beat is part of a row). */
  val rowsIn: Int = if (parIn > width) parIn / width else 1
  val rowsOut: Int = if (parOut > outW) parOut / outW else 1
  /** Pixels of one row per beat, and beats per row (1 when a beat holds whole rows). */
  val colsIn: Int = math.min(parIn, width)
  val colsOut: Int = math.min(parOut, outW)
  val inBeats: Int = width / colsIn
  val outBeats: Int = outW / colsOut
  /** Output row groups: the `rowsOut` output rows emitted together (one row when a beat is part of a row). */
  val groups: Int = outH / rowsOut
  /** Input rows one group's windows span. */
  val span: Int = (rowsOut - 1) * stride + kernel
  /** Row buffer depth (Window.ringRows). */
  val rows: Int = Window.ringRows(kernel, stride, parIn, width, parOut, outW)
  /** Index of the first input row kept for output group g (rows above it are no longer needed). */
  def headRow(g: Int): Int = math.max(0, g * rowsOut * stride - top)
  /** Input rows that must be complete (counted from headRow) before group g can be emitted. */
  def need(g: Int): Int = math.min((g * rowsOut + rowsOut - 1) * stride - top + kernel - 1, height - 1) - headRow(g) + 1
  /** Rows released after group g: up to the next group's head, or the rest of the image after the last. */
  def pop(g: Int): Int = if (g < groups - 1) headRow(g + 1) - headRow(g) else height - headRow(g)
  /** Pixels it can hold: the most beats in flight inside it, in input pixels. */
  def capacityPixels: Int = rows * width
}

/** Line buffer turning a raster stream of pixels (`parIn` consecutive pixels, all channels, per beat: part of a row
  * or whole rows) into a stream of k x k windows (`parOut` consecutive output pixels per beat, the same way), with
  * zero padding and stride. Window element order is (pixel, channel, row, column), the same as a flattened OIHW
  * weight row per pixel. Rows are held in a ring of `rows` slots; input stalls only when the ring cannot take a
  * beat's rows, so images stream back to back. Column selection is static per output beat position: each window
  * element is a mux over the beats of a row (outW / parOut candidates; none with whole rows per beat), after one
  * ring-slot mux per window row of each output row in the beat.
  */
@instantiable
class WindowGen(val p: WindowParams) extends Module {
  override def desiredName: String =
    s"WindowGen_c${p.channels}_${p.height}x${p.width}_k${p.kernel}s${p.stride}${p.padding.tag}_b${p.bits}_i${p.parIn}o${p.parOut}" +
      (if (p.padValue != 0) s"_v${p.padValue}" else "")
  private def padding: UInt = p.padValue.U(p.bits.W) // what the border reads: zeros, or a value below every input
  import ModuleTable._
  ModuleTable.record(desiredName, "line_buffer", "channels" -> p.channels, "height" -> p.height, "width" -> p.width,
    "kernel" -> p.kernel, "stride" -> p.stride, "rows" -> p.rows, "bits" -> p.bits, "par_in" -> p.parIn,
    "par_out" -> p.parOut, "out_width" -> p.outW)
  @public val in = IO(Flipped(Decoupled(Vec(p.parIn * p.channels, UInt(p.bits.W)))))
  @public val out = IO(Decoupled(Vec(p.parOut * p.channels * p.kernel * p.kernel, UInt(p.bits.W))))

  private val R = p.rows
  private val pixBits = p.channels * p.bits
  private val buf = Reg(Vec(R, Vec(p.width, UInt(pixBits.W))))
  private val count = RegInit(0.U(log2Ceil(R + 1).W))     // complete rows held, from the head slot
  private val head = RegInit(0.U(Window.bitsFor(R).W))          // ring slot of headRow(g)
  private val inBeat = RegInit(0.U(Window.bitsFor(p.inBeats).W))
  private val g = RegInit(0.U(Window.bitsFor(p.groups).W))      // output row group
  private val ob = RegInit(0.U(Window.bitsFor(p.outBeats).W))   // output beat within the group's row

  private def table(xs: Seq[Int], w: Int): Vec[UInt] = VecInit(xs.map(_.U(w.W)))
  private def wrap(x: UInt): UInt = Mux(x >= R.U, x - R.U, x)(Window.bitsFor(R) - 1, 0)
  private val cw = log2Ceil(R + 1) + 1
  private val needT = table((0 until p.groups).map(p.need), cw)
  private val needLastT = table((0 until p.groups).map(o => math.max(p.need(o), p.pop(o))), cw)
  private val popT = table((0 until p.groups).map(p.pop), cw)

  // input side: write the beat's columns (part of a row) or rows into the slots after the committed rows
  in.ready := count <= (R - p.rowsIn).U
  private val lastInBeat = inBeat === (p.inBeats - 1).U
  private val commit = in.fire && lastInBeat
  private val pixelsIn = in.bits.asTypeOf(Vec(p.parIn, UInt(pixBits.W)))
  when(in.fire) {
    for (r <- 0 until p.rowsIn) {
      val slot = wrap(head +& count +& r.U)
      for (col <- 0 until p.width)
        if (p.inBeats == 1) buf(slot)(col) := pixelsIn(r * p.width + col)
        else when(inBeat === (col / p.colsIn).U) { buf(slot)(col) := pixelsIn(col % p.colsIn) }
    }
    inBeat := Mux(lastInBeat, 0.U, inBeat + 1.U)
  }

  // output side
  private val lastBeat = ob === (p.outBeats - 1).U
  out.valid := count >= Mux(lastBeat, needLastT(g), needT(g))
  // per output row rq of the group and window row i: the ring slot's row, and whether it is inside the image
  private val rowsSel = for (rq <- 0 until p.rowsOut) yield (0 until p.kernel).map { i =>
    // input row of window row i of output row g*rowsOut + rq relative to the head; invalid rows are padding
    def inRow(o: Int) = (o * p.rowsOut + rq) * p.stride - p.padding.top + i
    val rowOff = (0 until p.groups).map(o => inRow(o) - p.headRow(o))
    val rowOk = (0 until p.groups).map(o => inRow(o) >= 0 && inRow(o) < p.height)
    val slot = wrap(head +& table(rowOff.map(math.max(0, _)), log2Ceil(R + 1))(g))
    val row = Wire(Vec(p.width, UInt(pixBits.W))) // one ring-slot mux per window row, shared by its elements
    row := buf(slot)
    (row, if (rowOk.forall(identity)) None else Some(VecInit(rowOk.map(_.B))(g)))
  }
  private val window = for (q <- 0 until p.parOut; c <- 0 until p.channels; i <- 0 until p.kernel; j <- 0 until p.kernel) yield {
    val (row, rowOk) = rowsSel(q / p.colsOut)(i)
    // the input column of this element for each output beat of the row; outside the image it is padding
    val cands = (0 until p.outBeats).map { b =>
      val x = (b * p.colsOut + q % p.colsOut) * p.stride - p.padding.left + j
      if (x >= 0 && x < p.width) row(x)((c + 1) * p.bits - 1, c * p.bits) else padding
    }
    val pix = if (cands.length == 1) cands.head else VecInit(cands)(ob)
    rowOk.map(ok => Mux(ok, pix, padding)).getOrElse(pix)
  }
  out.bits := VecInit(window)

  private val popNow = Mux(out.fire && lastBeat, popT(g), 0.U)
  when(out.fire) {
    ob := Mux(lastBeat, 0.U, ob + 1.U)
    when(lastBeat) { g := Mux(g === (p.groups - 1).U, 0.U, g + 1.U) }
    head := wrap(head +& popNow)
  }
  count := count + Mux(commit, p.rowsIn.U, 0.U) - popNow
}

object Window {
  /** Counter width for n states (at least one bit). */
  def bitsFor(n: Int): Int = math.max(1, log2Ceil(n))
  /** Whether `par` pixels per beat tile an h x w tensor by rows: a divisor of the width (part of a row), or a
    * whole number of rows dividing the height (hashiflex.hwmodel.beat_fits). */
  def fits(par: Int, h: Int, w: Int): Boolean = par >= 1 && (w % par == 0 || (par % w == 0 && h % (par / w) == 0))
  /** Ring rows of a line buffer. One row (or part of one) per beat on both sides: the window's `kernel` rows plus
    * `stride` so input keeps streaming while a row is emitted. Whole rows per beat (`rowsIn` in, `rowsOut` out):
    * twice the rows one output group's windows span, plus a group's stride and two input beats: the end of an image
    * (its last group waits for every row) and the start of the next (its first group needs several input beats)
    * then overlap without stalling; found with a cycle-level model of this ring over heights 1-16, kernels 1-5,
    * strides 1-3, paddings 0-2 and 1-6 rows per beat, the smallest of the forms tried with no shortfall against the
    * II, and checked by co-simulation at the II (tests/sim/test_stream.py). */
  def ringRows(kernel: Int, stride: Int, parIn: Int, width: Int, parOut: Int, outW: Int): Int = {
    val rowsIn = if (parIn > width) parIn / width else 1
    val rowsOut = if (parOut > outW) parOut / outW else 1
    if (rowsIn == 1 && rowsOut == 1) kernel + stride
    else 2 * ((rowsOut - 1) * stride + kernel) + stride * rowsOut + 2 * rowsIn
  }
  def rule(h: Int, w: Int): String =
    s"a divisor of the width $w, or a whole number of rows dividing the height $h (a multiple of $w): a beat never straddles rows"
}

object WindowGen {
  /** An instance of the one Definition per distinct parameter set in `defs` (layers with equal shapes, like
    * MobileNetV2's repeated blocks, share one elaborated line buffer).
    */
  def apply(p: WindowParams, in: DecoupledIO[Vec[UInt]], defs: mutable.Map[WindowParams, Definition[WindowGen]],
            name: String): DecoupledIO[Vec[UInt]] = {
    val m = Instance(defs.getOrElseUpdate(p, Definition(new WindowGen(p))))
    m.suggestName(name)
    m.in <> in
    m.out
  }
}
