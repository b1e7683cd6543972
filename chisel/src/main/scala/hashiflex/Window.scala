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
  require(width % parIn == 0, s"input parallelism $parIn must divide the width $width")
  require(outW % parOut == 0, s"output parallelism $parOut must divide the output width $outW")
  /** Beats per input row and per output row. */
  val inBeats: Int = width / parIn
  val outBeats: Int = outW / parOut
  /** Row buffer depth: k rows for the window plus `stride` so input keeps streaming while a row is emitted. */
  val rows: Int = kernel + stride
  /** Index of the first input row kept for output row oy (rows above it are no longer needed). */
  def headRow(oy: Int): Int = math.max(0, oy * stride - top)
  /** Input rows that must be complete (counted from headRow) before output row oy can be emitted. */
  def need(oy: Int): Int = math.min(oy * stride - top + kernel - 1, height - 1) - headRow(oy) + 1
  /** Rows released after output row oy: up to the next row's head, or the rest of the image after the last. */
  def pop(oy: Int): Int = if (oy < outH - 1) headRow(oy + 1) - headRow(oy) else height - headRow(oy)
  /** Pixels it can hold: the most beats in flight inside it, in input pixels. */
  def capacityPixels: Int = rows * width
}

/** Line buffer turning a raster stream of pixels (`parIn` consecutive pixels of a row, all channels, per beat)
  * into a stream of k x k windows (`parOut` consecutive output pixels per beat), with zero padding and stride.
  * Window element order is (pixel, channel, row, column), the same as a flattened OIHW weight row per pixel.
  * Rows are held in a ring of `rows` slots; input stalls only when the ring is full, so images stream back to
  * back. Column selection is static per output beat position: each window element is a mux over the beats of
  * a row (outW / parOut candidates), after one ring-slot mux per window row.
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
  private val head = RegInit(0.U(Window.bitsFor(R).W))          // ring slot of headRow(oy)
  private val inBeat = RegInit(0.U(Window.bitsFor(p.inBeats).W))
  private val oy = RegInit(0.U(Window.bitsFor(p.outH).W))
  private val ob = RegInit(0.U(Window.bitsFor(p.outBeats).W))   // output beat within the row

  private def table(xs: Seq[Int], w: Int): Vec[UInt] = VecInit(xs.map(_.U(w.W)))
  private def wrap(x: UInt): UInt = Mux(x >= R.U, x - R.U, x)(Window.bitsFor(R) - 1, 0)
  private val cw = log2Ceil(R + 1) + 1
  private val needT = table((0 until p.outH).map(p.need), cw)
  private val needLastT = table((0 until p.outH).map(o => math.max(p.need(o), p.pop(o))), cw)
  private val popT = table((0 until p.outH).map(p.pop), cw)

  // input side: write parIn columns of the slot after the committed rows
  private val wSlot = wrap(head +& count)
  in.ready := count < R.U
  private val lastInBeat = inBeat === (p.inBeats - 1).U
  private val commit = in.fire && lastInBeat
  private val pixelsIn = in.bits.asTypeOf(Vec(p.parIn, UInt(pixBits.W)))
  when(in.fire) {
    for (col <- 0 until p.width)
      when(inBeat === (col / p.parIn).U) { buf(wSlot)(col) := pixelsIn(col % p.parIn) }
    inBeat := Mux(lastInBeat, 0.U, inBeat + 1.U)
  }

  // output side
  private val lastBeat = ob === (p.outBeats - 1).U
  out.valid := count >= Mux(lastBeat, needLastT(oy), needT(oy))
  private val rowsOut = (0 until p.kernel).map { i =>
    // input row of window row i relative to the head: oy*s - p + i - headRow(oy); invalid rows are padding
    val rowOff = (0 until p.outH).map(o => o * p.stride - p.padding.top + i - p.headRow(o))
    val rowOk = (0 until p.outH).map(o => { val r = o * p.stride - p.padding.top + i; r >= 0 && r < p.height })
    val slot = wrap(head +& table(rowOff.map(math.max(0, _)), log2Ceil(R + 1))(oy))
    val row = Wire(Vec(p.width, UInt(pixBits.W))) // one ring-slot mux per window row, shared by its elements
    row := buf(slot)
    (row, if (rowOk.forall(identity)) None else Some(VecInit(rowOk.map(_.B))(oy)))
  }
  private val window = for (q <- 0 until p.parOut; c <- 0 until p.channels; i <- 0 until p.kernel; j <- 0 until p.kernel) yield {
    val (row, rowOk) = rowsOut(i)
    // the input column of this element for each output beat of the row; outside the image it is padding
    val cands = (0 until p.outBeats).map { b =>
      val x = (b * p.parOut + q) * p.stride - p.padding.left + j
      if (x >= 0 && x < p.width) row(x)((c + 1) * p.bits - 1, c * p.bits) else padding
    }
    val pix = if (cands.length == 1) cands.head else VecInit(cands)(ob)
    rowOk.map(ok => Mux(ok, pix, padding)).getOrElse(pix)
  }
  out.bits := VecInit(window)

  private val popNow = Mux(out.fire && lastBeat, popT(oy), 0.U)
  when(out.fire) {
    ob := Mux(lastBeat, 0.U, ob + 1.U)
    when(lastBeat) { oy := Mux(oy === (p.outH - 1).U, 0.U, oy + 1.U) }
    head := wrap(head +& popNow)
  }
  count := count + commit.asUInt - popNow
}

object Window {
  /** Counter width for n states (at least one bit). */
  def bitsFor(n: Int): Int = math.max(1, log2Ceil(n))
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
